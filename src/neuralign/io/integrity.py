"""Artefact records: what a stage marker vouches for, and checking it still holds.

A finished stage writes a marker (``done.json`` and similar) that lists the files it
produced with their size, SHA-256 and modification time. Before trusting a marker, a
resume calls :func:`verify_artefacts`: the size is compared always (free), the hash when
asked to (``verify=True``, ``neuralign run --verify``) or when a file's mtime differs from
the recorded one (someone touched it). A file that is missing, has another size or another
hash makes the marker void, and the stage runs again (docs/reliability.md, "Integrity").
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ArtefactProblem",
    "describe_problems",
    "file_record",
    "record_artefacts",
    "sha256_file",
    "verify_artefacts",
]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"size", "sha256", "mtime_ns"}`` of one file."""
    st = os.stat(path)
    return {"size": st.st_size, "sha256": sha256_file(path), "mtime_ns": st.st_mtime_ns}


def record_artefacts(
    paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str]
) -> dict[str, dict[str, Any]]:
    """Records of ``paths`` keyed by their POSIX path relative to ``root`` (JSON-ready).

    ``paths`` are ordinary paths (absolute, or relative to the working folder), below
    ``root``.

    Raises:
        FileNotFoundError: If one of the files does not exist (a stage must not vouch
            for an artefact it did not write).
        ValueError: If a path is not below ``root``.
    """
    base = Path(root).resolve()
    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        full = Path(p).resolve()  # an ordinary path (relative ones: to the working folder)
        rel = full.relative_to(base).as_posix()
        out[rel] = file_record(full)
    return out


@dataclass(frozen=True)
class ArtefactProblem:
    """An artefact that no longer matches its record."""

    path: str  # relative to the root
    reason: str  # "missing", "size ...", "content changed ..."

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def verify_artefacts(
    records: Mapping[str, Mapping[str, Any]],
    root: str | os.PathLike[str],
    *,
    verify: bool = False,
) -> list[ArtefactProblem]:
    """Check files against their records; return what is wrong (empty: all good).

    Args:
        records: As written by :func:`record_artefacts` (a malformed record counts as a
            problem, never as a pass).
        root: The folder the record paths are relative to.
        verify: Hash every file. Without it, only files whose size matches but whose
            modification time differs from the record are hashed.
    """
    base = Path(root)
    problems: list[ArtefactProblem] = []
    if not isinstance(records, Mapping):
        return [ArtefactProblem("(marker)", "artefact record is not a mapping")]
    for rel, rec in records.items():
        path = base / rel
        try:
            size = int(rec["size"])
            digest = str(rec["sha256"])
            mtime = rec.get("mtime_ns")
        except (KeyError, TypeError, ValueError):
            problems.append(ArtefactProblem(rel, "malformed artefact record"))
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            problems.append(ArtefactProblem(rel, "missing"))
            continue
        except OSError as exc:
            problems.append(ArtefactProblem(rel, f"unreadable ({exc.strerror or exc})"))
            continue
        if st.st_size != size:
            problems.append(ArtefactProblem(rel, f"size {st.st_size} bytes, recorded {size}"))
            continue
        if verify or mtime is None or st.st_mtime_ns != mtime:
            try:
                actual = sha256_file(path)
            except OSError as exc:
                problems.append(ArtefactProblem(rel, f"unreadable ({exc.strerror or exc})"))
                continue
            if actual != digest:
                problems.append(
                    ArtefactProblem(
                        rel, f"content changed (sha256 {actual[:12]}…, recorded {digest[:12]}…)"
                    )
                )
    return problems


def describe_problems(problems: Iterable[ArtefactProblem], limit: int = 3) -> str:
    """One line for a list of problems: ``"a: missing; b: size 3 bytes, ..."``."""
    items = [str(p) for p in problems]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more
