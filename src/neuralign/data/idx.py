"""IDX datasets (MNIST, Fashion-MNIST): the file reader and the family loader.

The IDX container (the format of the MNIST files) is a short big-endian header followed by the
raw array; files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralign.data.datasets import Dataset, download_dir, not_found, search_roots, to_dataset
from neuralign.data.download import download_file
from neuralign.errors import DataError
from neuralign.io.files import regular_file

if TYPE_CHECKING:
    from neuralign.data.registry import DatasetSpec

__all__ = ["load_idx", "read_idx", "read_maybe_gzip"]

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_maybe_gzip(path: Path) -> bytes:
    """Read a file, transparently decompressing gzip (detected by its magic bytes)."""
    regular_file(path, "dataset file", DataError)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as gz:
                    return gz.read()
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path} is a truncated or corrupt gzip file ({exc}); delete it and download it again"
        ) from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST container format), raw or gzip-compressed.

    The header is two zero bytes, a type code (``0x08`` = uint8, ...), the number of
    dimensions, then one big-endian ``uint32`` per dimension; the data follow in C order.

    Args:
        path: IDX file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array, with the file's shape and a native-endian dtype.

    Raises:
        DataError: If the magic number is wrong or the data size does not match the header.
    """
    p = Path(path)
    raw = read_maybe_gzip(p)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{p} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); it may be "
            "corrupt or of another format; delete it and download it again"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p} is truncated inside its IDX header; download it again")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"{p} is {what}: header promises shape {shape} ({expected} bytes of data), file has "
            f"{actual}; delete it and download it again"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find_idx(directory: Path, prefix: str, kind: str) -> Path | None:
    """Find ``<prefix>-<kind>-ubyte`` in the usual spellings (``-``/``.``, gz or not)."""
    for stem in (f"{prefix}-{kind}-ubyte", f"{prefix}-{kind.replace('-idx', '.idx')}-ubyte"):
        for suffix in (".gz", ""):
            p = directory / (stem + suffix)
            if p.is_file():
                return p
    return None


def load_idx(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
    *,
    subdirs: tuple[str, ...],
    hint: str,
) -> Dataset:
    """Family loader of the IDX datasets (bind ``subdirs`` and ``hint`` in the row).

    Args:
        spec: The dataset's registry row (stats, classes, sources).
        name: Registry name.
        split: ``"train"`` or ``"test"`` (the ``t10k`` files).
        data_dir: Directory holding the files, or None for the default roots.
        download: Fetch the official files if they are not found.
        subdirs: Sub-folders of each root to look in (``""`` = the root itself).
        hint: How to get the files, for the not-found error.

    Raises:
        DataError: Files missing or inconsistent.
    """
    prefix = "train" if split == "train" else "t10k"
    dirs = [root / sub if sub else root for root in search_roots(data_dir) for sub in subdirs]
    for d in dirs:
        img = _find_idx(d, prefix, "images-idx3")
        lab = _find_idx(d, prefix, "labels-idx1")
        if img is not None and lab is not None:
            break
    else:
        if not download:
            raise not_found(name, dirs, hint)
        target = download_dir(data_dir) / spec.name
        for remote in spec.sources:
            download_file(remote.url, target / remote.filename, remote.checksum)
        img = target / f"{prefix}-images-idx3-ubyte.gz"
        lab = target / f"{prefix}-labels-idx1-ubyte.gz"
    images = read_idx(img)
    labels = read_idx(lab)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{img}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{lab}: {labels.shape} labels do not match {images.shape[0]} images in {img}"
        )
    assert spec.stats is not None
    return to_dataset(
        images[:, None], labels.astype(np.int64), name, spec.num_classes, spec.classes, spec.stats
    )
