"""One writer per run folder: an advisory lock file naming its holder.

``neuralign run``/``train``/``curve``/``pam`` take the lock of their output folder before
writing anything there, so a second command started on the same folder fails at once
(docs/reliability.md, "Run-folder lock") instead of redoing the same work and interleaving
its files with the first one's.

The lock is ``FOLDER/.neuralign.lock``, held with ``fcntl.flock`` for the lifetime of the
holder: the kernel drops it when the process dies, however it dies (SIGKILL included), so
a crashed run never blocks the next one. The file also records the holder's PID, host,
command and start time, for the message the second command prints and for the "taking over
a stale lock" notice. Where ``flock`` is not available (some network file systems), an
``O_EXCL``-created file with the same content is the lock, and a holder that is a dead PID
on this host counts as stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from neuralign.errors import NeuralignError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_holder", "run_lock"]

logger = logging.getLogger(__name__)

#: Name of the lock file inside a run folder.
LOCK_NAME = ".neuralign.lock"


class RunLockedError(NeuralignError, OSError):
    """Another live process holds the run folder's lock."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the lock file of ``folder`` says about its holder (``None``: no lock file).

    An unreadable or half-written lock file gives ``{}``.
    """
    path = Path(folder) / LOCK_NAME
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (its lock file is empty or being written)"
    started = info.get("started")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(started)))
        if isinstance(started, (int, float))
        else "?"
    )
    cmd = info.get("command") or "neuralign"
    return f"`{cmd}` (pid {info.get('pid', '?')} on {info.get('host', '?')}, started {when})"


class RunLock:
    """The lock of one run folder; use as a context manager or call acquire/release.

    Args:
        folder: The run folder (created if missing).
        command: What the holder is doing, for the other process's message (e.g.
            ``"neuralign run cfg.toml"``).
        notify: Where the "took over a stale lock" notice goes (default: a log warning).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        command: str = "neuralign",
        *,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self.notify = notify or logger.warning
        self._fd: int | None = None
        self._excl = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def _content(self) -> bytes:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.time(),
        }
        return (json.dumps(info) + "\n").encode()

    def _refuse(self, info: dict[str, Any] | None) -> RunLockedError:
        return RunLockedError(
            f"{self.folder} is in use by {_describe(info)}; wait for it to finish or stop "
            f"it, or use another --out folder (if no such process runs, delete {self.path})"
        )

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` at once naming the holder."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is not None and self._acquire_flock():
            return self
        return self._acquire_excl()

    def _acquire_flock(self) -> bool:
        """Take the lock with ``flock``; ``False`` if the file system does not support it."""
        assert fcntl is not None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise self._refuse(lock_holder(self.folder)) from None
                    os.close(fd)
                    return False
                # A releasing holder unlinks the file under the lock: if the name no longer
                # points at what we locked, lock the new file instead.
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                old = lock_holder(self.folder)
                if old:
                    self._stale_notice(old)
                os.ftruncate(fd, 0)
                os.pwrite(fd, self._content(), 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return True

    def _acquire_excl(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = lock_holder(self.folder)
                if (
                    info
                    and info.get("host") == socket.gethostname()
                    and not _pid_alive(int(info.get("pid", -1)))
                ):
                    self._stale_notice(info)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    continue
                raise self._refuse(info) from None
            os.write(fd, self._content())
            os.fsync(fd)
            self._fd, self._excl = fd, True
            return self
        raise self._refuse(lock_holder(self.folder))

    def _stale_notice(self, info: dict[str, Any]) -> None:
        self.notify(
            f"taking over the stale lock of {self.folder} left by {_describe(info)}, which "
            "is no longer running"
        )

    def release(self) -> None:
        """Give the lock up (and remove the lock file). Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.release()


@contextlib.contextmanager
def run_lock(
    folder: str | os.PathLike[str],
    command: str = "neuralign",
    *,
    notify: Callable[[str], None] | None = None,
) -> Iterator[RunLock]:
    """``with run_lock(folder, "neuralign run cfg.toml"):`` hold ``folder``'s lock inside."""
    lock = RunLock(folder, command, notify=notify).acquire()
    try:
        yield lock
    finally:
        lock.release()
