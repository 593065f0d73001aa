"""Refuse special files before opening them (docs/reliability.md, "Special files").

A FIFO blocks ``open`` until a writer appears, ``/dev/zero`` or ``/dev/urandom`` never end,
and a directory cannot be read as a file: every reader of neuralign calls
:func:`regular_file` first, which looks only at ``os.stat`` (it never opens the path) and
raises the reader's typed error naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from neuralign.errors import NeuralignError

__all__ = ["regular_file"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def regular_file(
    path: str | os.PathLike[str],
    what: str,
    error: type[NeuralignError],
    *,
    max_bytes: int | None = None,
) -> Path:
    """Return ``path`` if it is a regular file (symlinks followed), else raise ``error``.

    Args:
        path: The file to read.
        what: What the file should be, for the message (``"config file"``).
        error: The reader's typed error class (``ConfigError``, ``CheckpointError``, ...).
        max_bytes: Refuse a larger file (readers that load the whole text at once).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{what} not found: {p}") from None
    except (OSError, ValueError) as exc:  # permission, a name too long, a NUL byte
        raise error(f"cannot read {what} {p}: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        raise error(f"{p} is {kind}, expected a {what}; refusing to read it")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(
            f"{p} has {st.st_size} bytes, more than a {what} can ({max_bytes}); is it the "
            "right file?"
        )
    return p
