"""CIFAR-10/100: the "python version" (pickle) and "binary version" readers and the loader.

* "python version": pickled dicts, read with :class:`RestrictedUnpickler`, which only rebuilds
  numpy arrays and refuses every other global.
* "binary version": fixed-size records of label byte(s) + 3072 pixel bytes.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import pickletools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralign.data import classes
from neuralign.data.datasets import Dataset, download_dir, not_found, search_roots, to_dataset
from neuralign.data.download import download_file, extract_archive
from neuralign.errors import DataError
from neuralign.io.files import regular_file

if TYPE_CHECKING:
    from neuralign.data.registry import DatasetSpec

__all__ = [
    "RestrictedUnpickler",
    "load_cifar",
    "read_cifar_binary",
    "read_cifar_pickle",
    "restricted_load",
]

logger = logging.getLogger(__name__)

# The array-rebuilding function numpy's pickles reference, resolved without importing a
# private module (its home moved from numpy.core to numpy._core in numpy 2).
_NUMPY_RECONSTRUCT = np.ndarray(0).__reduce__()[0]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays.

    The CIFAR "python version" batches are pickled dicts of lists, bytes and numpy arrays.
    Unpickling them with :func:`pickle.load` would let a crafted file run arbitrary code
    (``__reduce__`` returning ``os.system``); this class resolves only the three globals numpy's
    array pickles need and raises :class:`~neuralign.errors.DataError` for anything else.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global if it is on the allow-list, otherwise refuse.

        Args:
            module: Module name recorded in the pickle.
            name: Attribute name recorded in the pickle.

        Returns:
            The allowed object.

        Raises:
            DataError: For any global outside the allow-list.
        """
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in dataset "
                "pickles; the file is not a genuine CIFAR batch (possibly malicious); delete it"
            ) from None


def _check_pickle_stream(data: bytes) -> None:
    """Walk the opcodes of a pickle without executing it; raise on a malformed stream.

    The C unpickler allocates a length-prefixed argument *before* reading it, so a corrupt
    length field (a flipped bit in a 4-byte size) makes it allocate and zero gigabytes
    for a few-kilobyte file. :func:`pickletools.genops` reads each argument from the bytes
    actually present and stops at the first inconsistency.
    """
    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
    except (ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise DataError(
            f"malformed pickle stream ({exc}); the file is truncated or corrupt: delete it "
            "and download it again"
        ) from None


def restricted_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle a dataset file with :class:`RestrictedUnpickler` (``encoding="bytes"``).

    Args:
        path: Pickle file.

    Returns:
        The unpickled object (``bytes`` keys, as the python-2 era CIFAR files produce).

    Raises:
        DataError: If the file is unsafe, truncated or not a pickle.
    """
    p = regular_file(path, "dataset file", DataError)
    try:
        # Unpickle from memory: a corrupt length field then reads past the end ("truncated")
        # instead of asking the file object for gigabytes.
        data = p.read_bytes()
        _check_pickle_stream(data)
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise DataError(
            f"{p} is truncated or not a CIFAR pickle ({type(exc).__name__}: {exc}); delete it "
            "and download it again"
        ) from exc


def _get(d: dict[Any, Any], key: str) -> Any:
    """Look a CIFAR dict key up as bytes (python-2 era files) or str."""
    if key.encode() in d:
        return d[key.encode()]
    if key in d:
        return d[key]
    raise KeyError(key)


def read_cifar_pickle(
    files: Sequence[str | os.PathLike[str]], label_key: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR "python version" batches.

    Each file holds a dict with ``b"data"``, a ``(n, 3072)`` uint8 array whose rows are the
    red, green and blue 32×32 planes in row-major order, and a list of labels under
    ``label_key`` (``b"labels"`` for CIFAR-10, ``b"fine_labels"`` for CIFAR-100).

    Args:
        files: Batch files in order.
        label_key: Name of the label entry.

    Returns:
        ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    Raises:
        DataError: If a file is unsafe, malformed or inconsistent.
    """
    images, labels = [], []
    for f in files:
        d = restricted_load(f)
        if not isinstance(d, dict):
            raise DataError(f"{f} does not hold a dict, so it is not a CIFAR batch")
        try:
            raw_data, raw_labels = _get(d, "data"), _get(d, label_key)
        except KeyError as exc:
            raise DataError(f"{f} has no {exc} entry, so it is not a CIFAR batch") from None
        try:
            data = np.asarray(raw_data)
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataError(f"{f}: data is not an array ({exc}); the file is corrupt") from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(
                f"{f}: data has shape {data.shape} and dtype {data.dtype}, expected (n, 3072) uint8"
            )
        try:
            lab = np.asarray(raw_labels, dtype=np.int64)
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataError(
                f"{f}: {label_key} is not a list of integers ({exc}); the file is corrupt"
            ) from None
        if lab.shape != (data.shape[0],):
            raise DataError(
                f"{f}: labels of shape {lab.shape} for {data.shape[0]} images; the file is corrupt"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------------------------
# CIFAR, binary version
# --------------------------------------------------------------------------------------------


def read_cifar_binary(
    files: Sequence[str | os.PathLike[str]], label_bytes: int = 1, label_index: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR "binary version" files.

    Each record is ``label_bytes`` label bytes followed by 3072 pixel bytes (R, G, B planes).
    CIFAR-10 has one label byte; CIFAR-100 has two (coarse, fine).

    Args:
        files: ``.bin`` files in order.
        label_bytes: Label bytes per record (1 or 2).
        label_index: Which label byte to return (1 = fine for CIFAR-100).

    Returns:
        ``(images (N, 3, 32, 32) uint8, labels (N,) int64)``.

    Raises:
        DataError: If a file size is not a whole number of records.
    """
    record = label_bytes + 3072
    images, labels = [], []
    for f in files:
        raw = np.fromfile(regular_file(f, "dataset file", DataError), dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(
                f"{f} has {raw.size} bytes, not a positive multiple of the {record}-byte CIFAR "
                "record; it is truncated or corrupt; delete it and download it again"
            )
        recs = raw.reshape(-1, record)
        labels.append(recs[:, label_index].astype(np.int64))
        images.append(recs[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


def _cifar_layouts(name: str, split: str) -> list[tuple[str, list[str], str]]:
    """(directory name, files, format) of the python and binary layouts, python first."""
    if name == "cifar10":
        py = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return [
            ("cifar-10-batches-py", py, "pickle"),
            ("cifar-10-batches-bin", [f + ".bin" for f in py], "binary"),
        ]
    files = ["train"] if split == "train" else ["test"]
    return [
        ("cifar-100-python", files, "pickle"),
        ("cifar-100-binary", [f + ".bin" for f in files], "binary"),
    ]


def _cifar_names(spec: DatasetSpec, directory: Path, fmt: str) -> list[str]:
    """Class names from the meta file of the layout, or the row's standard list."""
    name = spec.name
    try:
        if name == "cifar10" and fmt == "pickle" and (directory / "batches.meta").is_file():
            meta = restricted_load(directory / "batches.meta")
            return [_text(n) for n in meta[b"label_names"]]
        if name == "cifar100" and fmt == "pickle" and (directory / "meta").is_file():
            meta = restricted_load(directory / "meta")
            return [_text(n) for n in meta[b"fine_label_names"]]
        txt = directory / ("batches.meta.txt" if name == "cifar10" else "fine_label_names.txt")
        if fmt == "binary" and txt.is_file():
            regular_file(txt, "class-name file", DataError, max_bytes=1 << 20)
            text = txt.read_text(encoding="utf-8", errors="replace")
            return [ln.strip() for ln in text.splitlines() if ln.strip()]
    except (KeyError, TypeError, AttributeError, IndexError):
        logger.warning("ignoring malformed class-name metadata in %s", directory)
    fallback = spec.classes or (classes.CIFAR10 if name == "cifar10" else classes.CIFAR100)
    return list(fallback)


def _text(x: bytes | str) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def load_cifar(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    """Family loader of CIFAR-10 and CIFAR-100 (python layout first, then binary).

    Raises:
        DataError: Files missing, incomplete, corrupt or unsafe.
    """
    layouts = _cifar_layouts(spec.name, split)
    searched: list[Path] = []
    for root in search_roots(data_dir):
        # Accept the root itself being the batches directory.
        for dirname, files, fmt in layouts:
            for directory in (root / dirname, root):
                searched.append(directory)
                if all((directory / f).is_file() for f in files):
                    return _read_cifar_dir(spec, directory, files, fmt)
                partial = [f for f in files if (directory / f).is_file()]
                if partial:
                    missing = sorted(set(files) - set(partial))
                    raise DataError(
                        f"{name}: {directory} is incomplete (missing {', '.join(missing)}); "
                        "restore the missing files or delete the directory and download again"
                    )
    if not download:
        raise not_found(
            name,
            list(dict.fromkeys(searched)),
            "pass data_dir (--data-dir) pointing at the directory holding "
            f"{layouts[0][0]}/ or {layouts[1][0]}/, or pass download=True (--download)",
        )
    root = download_dir(data_dir)
    remote = spec.sources[0]
    archive = download_file(remote.url, root / remote.filename, remote.checksum)
    extract_archive(archive, root)
    dirname, files, fmt = layouts[0]
    return _read_cifar_dir(spec, root / dirname, files, fmt)


def _read_cifar_dir(spec: DatasetSpec, directory: Path, files: list[str], fmt: str) -> Dataset:
    paths = [directory / f for f in files]
    if fmt == "pickle":
        images, labels = read_cifar_pickle(
            paths, "labels" if spec.name == "cifar10" else "fine_labels"
        )
    elif spec.name == "cifar10":
        images, labels = read_cifar_binary(paths, 1, 0)
    else:
        images, labels = read_cifar_binary(paths, 2, 1)
    assert spec.stats is not None
    names = _cifar_names(spec, directory, fmt)
    return to_dataset(images, labels, spec.name, spec.num_classes, names, spec.stats)
