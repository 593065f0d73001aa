"""Tiny ImageNet: the ``tiny-imagenet-200`` folder layout, decoded once and cached.

Classes are the wnids of ``wnids.txt`` in sorted order (the convention of folder-based
loaders). ``split="train"`` reads ``train/<wnid>/images/*``; ``split="test"`` reads the labelled
validation set (``val/images`` + ``val/val_annotations.txt``), because the official test labels
are not public.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neuralign.data import imagecache
from neuralign.data.datasets import Dataset, download_dir, not_found, search_roots, to_dataset
from neuralign.data.download import download_file, extract_archive
from neuralign.errors import DataError
from neuralign.io.files import regular_file

if TYPE_CHECKING:
    from neuralign.data.registry import DatasetSpec

__all__ = ["load_tinyimagenet", "read_tinyimagenet", "read_tinyimagenet_words"]

logger = logging.getLogger(__name__)

_TINY_SIZE = 64


def _tiny_listing(root: Path, split: str) -> tuple[list[str], list[Path], list[int]]:
    """Return ``(wnids, files, labels)`` for a Tiny ImageNet split, in a fixed order."""
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise DataError(f"{root} has no wnids.txt, so it is not a tiny-imagenet-200 directory")
    wnids = sorted({w.strip() for w in _read_listing(wnids_file).split() if w.strip()})
    bad = [w for w in wnids if not _is_plain_name(w)]
    if bad or not wnids:
        found = repr(bad[0]) if bad else "none"
        raise DataError(
            f"{wnids_file}: expected one wnid (a plain folder name) per line, found {found}; "
            "the file is corrupt"
        )
    index = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            img_dir = root / "train" / w / "images"
            if not img_dir.is_dir():
                raise DataError(f"{img_dir} is missing; the tiny-imagenet-200 copy is incomplete")
            for p in sorted(img_dir.iterdir()):
                if p.suffix.lower() in (".jpeg", ".jpg", ".png"):
                    files.append(p)
                    labels.append(index[w])
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DataError(f"{ann} is missing; the tiny-imagenet-200 copy is incomplete")
        rows = []
        for lineno, line in enumerate(_read_listing(ann).splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"{ann}:{lineno}: malformed line or unknown wnid: {line!r}")
            if not _is_plain_name(parts[0]):
                # Never follow a listed name out of val/images (``../``, absolute paths).
                raise DataError(f"{ann}:{lineno}: {parts[0]!r} is not a plain image file name")
            rows.append((parts[0], index[parts[1]]))
        for name, lab in sorted(rows):
            files.append(root / "val" / "images" / name)
            labels.append(lab)
    if not files:
        raise DataError(f"no images found for split {split!r} under {root}")
    return wnids, files, labels


def _read_listing(path: Path) -> str:
    """Read a Tiny ImageNet text listing (ASCII wnids and file names)."""
    regular_file(path, "dataset listing", DataError, max_bytes=64 << 20)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a text listing ({exc}); the file is corrupt") from None


def _is_plain_name(name: str) -> bool:
    """True for a single path component: no separators, ``..``, NUL or drive letters."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0:")
        and name.isprintable()
    )


def read_tinyimagenet(
    root: str | os.PathLike[str],
    split: str,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 8,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a ``tiny-imagenet-200`` directory, decoding once and caching as ``.npz``.

    Images are converted to RGB (a few originals are grayscale) and resized to 64×64 if
    needed. The decoded arrays are cached as ``neuralign-cache-<split>.npz`` in ``root``, or,
    if that is not writable, under ``cache_dir`` (default ``~/.cache/neuralign``). The cache
    stores a fingerprint of the file listing and is rebuilt if the folder changes.

    Args:
        root: The ``tiny-imagenet-200`` directory.
        split: ``"train"`` or ``"test"``.
        cache_dir: Fallback cache location.
        workers: Decoding threads.

    Returns:
        ``(images (N, 3, 64, 64) uint8, labels (N,) int64, wnids)``.

    Raises:
        DataError: If the layout is incomplete or an image cannot be decoded.
    """
    r = Path(root)
    wnids, files, labels = _tiny_listing(r, split)
    candidates = imagecache.cache_candidates(
        r, "tinyimagenet", split, Path(cache_dir) if cache_dir is not None else None
    )
    images, lab = imagecache.cached_decode(
        r,
        files,
        labels,
        (3, _TINY_SIZE, _TINY_SIZE),
        candidates,
        workers=workers,
        what=f"tinyimagenet {split} images",
    )
    return images, lab, wnids


def read_tinyimagenet_words(root: str | os.PathLike[str], wnids: Sequence[str]) -> list[str]:
    """Human-readable class names from ``words.txt`` (first synonym), falling back to wnids.

    Args:
        root: The ``tiny-imagenet-200`` directory.
        wnids: Class wnids in label order.

    Returns:
        One name per class.
    """
    words = Path(root) / "words.txt"
    table: dict[str, str] = {}
    if words.is_file():
        for line in words.read_text(errors="replace").splitlines():
            parts = line.split("\t", 1)
            if len(parts) == 2:
                table[parts[0].strip()] = parts[1].split(",")[0].strip()
    return [table.get(w, w) for w in wnids]


def load_tinyimagenet(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    """Family loader of Tiny ImageNet (``tiny-imagenet-200/`` under a search root).

    Raises:
        DataError: Files missing or corrupt.
    """
    searched: list[Path] = []
    found: Path | None = None
    for root in search_roots(data_dir):
        for d in (root / "tiny-imagenet-200", root):
            searched.append(d)
            if (d / "wnids.txt").is_file():
                found = d
                break
        if found is not None:
            break
    if found is None:
        if not download:
            raise not_found(
                name,
                searched,
                "pass data_dir (--data-dir) pointing at the directory holding tiny-imagenet-200/, "
                "or pass download=True (--download)",
            )
        root = download_dir(data_dir)
        remote = spec.sources[0]
        archive = download_file(remote.url, root / remote.filename, remote.checksum)
        extract_archive(archive, root)
        found = root / "tiny-imagenet-200"
    images, labels, wnids = read_tinyimagenet(found, split)
    names = read_tinyimagenet_words(found, wnids)
    assert spec.stats is not None
    return to_dataset(images, labels, spec.name, len(wnids), names, spec.stats)
