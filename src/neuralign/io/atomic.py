"""Atomic file writes: write to a temporary file in the same folder, then rename.

A run killed at any moment therefore leaves either the old file or the new one, never a
half-written file. New files get the permissions the user's umask allows (``0644`` for the
usual ``022``), rewritten files keep theirs (and at most a ``.NAME.XXXXXXXX.neuralign.tmp`` temporary, which
:func:`remove_stale_temporaries` recognises as neuralign's own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from neuralign.errors import NeuralignError
from neuralign.io.outputs import TMP_SUFFIX, is_own_temporary


class DiskFullError(NeuralignError, OSError):
    """The disk filled up while writing; the previous file (if any) is intact."""


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible, which changes nothing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no read-only query exists elsewhere: set and restore at once
    os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike[str]) -> int:
    """Permissions for (re)writing ``path``: its current ones, else ``0o666`` minus the umask.

    ``tempfile.mkstemp`` creates ``0600`` files, so an atomically renamed temporary would make
    every output unreadable to the group and others whatever the user's umask; the writers
    here give the temporary these permissions before renaming it.
    """
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    On any exception the temporary file is removed and ``path`` keeps its old content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    try:
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode(target))
        os.replace(tmp, target)
    except BaseException as exc:
        # Also on Ctrl-C (KeyboardInterrupt): the temporary file goes, the target stays.
        # A full disk is diagnosed before the removal (which frees the space again).
        try:
            full = isinstance(exc, Exception) and _is_disk_full(exc, target.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        if full:
            raise DiskFullError(
                f"disk full while writing {target}; the previous version is intact. "
                "Free some space and re-run: finished work is kept."
            ) from exc
        raise


#: Below this much free space, a failed write is taken to be a full disk.
_LOW_SPACE = 16 * 2**20


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (or an exception it chains) reports a full disk.

    ``OSError(ENOSPC)`` says so directly; writers implemented in C++/Rust (``torch.save``,
    safetensors) raise their own errors ("file write failed"), so for those the free space
    of ``folder`` decides.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    write_failed = False
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "ENOSPC" in text:
            return True
        write_failed = write_failed or "write" in text.lower()
        e = e.__cause__ or e.__context__
    if not write_failed:
        return False
    try:
        return shutil.disk_usage(folder).free < _LOW_SPACE
    except OSError:
        return False


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary files that killed writers left under ``folder``; return how many.

    A process killed inside :func:`atomic_path` cannot remove its
    ``.NAME.XXXXXXXX.neuralign.tmp`` file. Call this when (re)starting work in a folder
    neuralign owns (a run folder) and no other process is writing to (hold its
    :class:`~neuralign.io.runlock.RunLock`). Only files named the way :func:`atomic_path`
    names its temporaries are removed (other ``.tmp`` files are not neuralign's), symbolic
    links are neither followed nor removed.
    """
    removed = 0
    root = Path(folder)
    if not root.is_dir() or root.is_symlink():
        return 0
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            p = Path(dirpath) / name
            if is_own_temporary(p) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path``; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Atomically create ``path`` by calling ``writer(tmp_path)``; return the path."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)
