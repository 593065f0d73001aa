"""Resume fingerprints: a resumable command continues only the run it started.

A resumable command (``train``, ``curve``, ``pam``, ``run``) records in its output folder
what determines its result (its settings, and the content hashes of its input files) the
first time it writes there. Started again on that folder, it compares: the same
fingerprint resumes, a different one is refused with one line naming what changed and how
to start fresh, before anything is written (docs/reliability.md, "Resume with changed
arguments"). Without this a ``train --out DIR`` resumed with another ``--seed`` would
continue silently and its checkpoint would claim the new seed for the whole run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neuralign.errors import ConfigError

__all__ = [
    "FINGERPRINT_NAME",
    "ResumeMismatchError",
    "check_resume",
    "claim_folder",
    "fingerprint",
    "input_digest",
]

#: File (inside the output folder) holding the fingerprint of the run there.
FINGERPRINT_NAME = "fingerprint.json"


class ResumeMismatchError(ConfigError):
    """The output folder holds a run started with other settings or inputs."""


def _canonical(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(fields: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``fields`` (key order does not matter)."""
    return hashlib.sha256(_canonical(fields).encode()).hexdigest()


def input_digest(path: str | os.PathLike[str]) -> str:
    """Content hash of an input file, for a fingerprint (moving the file keeps it)."""
    from neuralign.io.integrity import sha256_file

    return sha256_file(path)


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume(
    folder: str | os.PathLike[str],
    fields: Mapping[str, Any],
    *,
    command: str,
    write: bool = True,
) -> bool:
    """Compare ``fields`` with the fingerprint stored in ``folder``; store it if none.

    Args:
        folder: The command's output folder.
        fields: JSON-serialisable settings and input digests that determine the result
            (not speed settings such as the device or progress bars).
        command: The command, for the message (``"neuralign train"``).
        write: Store the fingerprint when the folder has none (atomically; the folder is
            created). Pass ``False`` to only check.

    Returns:
        ``True`` if a matching fingerprint was found (a resume), ``False`` for a new run.

    Raises:
        ResumeMismatchError: When the stored fingerprint differs: one line listing the
            first changed fields (old → new) and how to start fresh.
    """
    from neuralign.io.atomic import atomic_write_text

    d = Path(folder)
    path = d / FINGERPRINT_NAME
    fields = json.loads(_canonical(fields))  # the form it is stored in
    digest = fingerprint(fields)
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            old_fields = stored["fields"]
            old_digest = stored["sha256"]
            if not isinstance(old_fields, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            old_fields, old_digest = None, None
        if old_digest == digest:
            return True
        if old_fields is None:
            changed = f"its {FINGERPRINT_NAME} is unreadable"
        else:
            diffs = [
                f"{k} {_short(old_fields.get(k))} -> {_short(fields.get(k))}"
                for k in sorted(set(old_fields) | set(fields))
                if old_fields.get(k) != fields.get(k)
            ]
            more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
            changed = "; ".join(diffs[:3]) + more if diffs else "its fingerprint differs"
        raise ResumeMismatchError(
            f"{d} holds a `{command}` run started with other arguments or inputs ({changed}); "
            "re-run with the original ones to resume it, or start fresh with another --out "
            "folder (or delete this one)"
        )
    if write:
        text = json.dumps({"command": command, "sha256": digest, "fields": fields}, indent=2)
        atomic_write_text(path, text + "\n")
    return False


def claim_folder(
    folder: str | os.PathLike[str],
    fields: Mapping[str, Any],
    *,
    command: str,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    notify: Any = None,
) -> Any:
    """Take ``folder``'s run lock, then check (or store) the resume fingerprint.

    The one call a resumable command makes before it writes into its output folder:
    a folder another live process works in is refused at once
    (:class:`~neuralign.io.runlock.RunLockedError`), and a folder holding a run started
    with other ``fields`` or other ``inputs`` (files, compared by content hash) is refused
    with :class:`ResumeMismatchError`; in both cases nothing is written.

    Args:
        folder: The output folder (created when new).
        fields: Settings that determine the result (see :func:`check_resume`).
        command: The command line's name, shown to a second process and in messages.
        inputs: ``{name: path}`` of input files whose content determines the result.
        notify: Where a "took over a stale lock" notice goes (default: a log warning).

    Returns:
        The held :class:`~neuralign.io.runlock.RunLock`; release it when done.
    """
    from neuralign.io.runlock import RunLock

    lock = RunLock(folder, command, notify=notify).acquire()
    try:
        digests = {k: input_digest(p) for k, p in (inputs or {}).items()}
        all_fields = {**fields, "inputs": digests} if digests else dict(fields)
        check_resume(folder, all_fields, command=command)
    except BaseException:
        lock.release()
        raise
    return lock
