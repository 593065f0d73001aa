"""Low-level readers of the on-disk dataset formats.

Each reader returns plain numpy arrays (``uint8`` images ``(N, C, H, W)``, ``int64`` labels)
and validates what it reads: a truncated, corrupt or malicious file raises
:class:`~neuralign.errors.DataError` with a message that names the file and the fix.

Formats:

* IDX (MNIST, Fashion-MNIST), raw or gzip-compressed.
* CIFAR-10/100 "python version": pickled dicts, read with :class:`RestrictedUnpickler`, which
  only rebuilds numpy arrays and refuses every other global.
* CIFAR-10/100 "binary version": fixed-size records of label byte(s) + 3072 pixel bytes.
* Tiny ImageNet folder layout, decoded once with PIL and cached as ``.npz``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import pickletools
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from neuralign.errors import DataError

__all__ = [
    "RestrictedUnpickler",
    "read_cifar_binary",
    "read_cifar_pickle",
    "read_idx",
    "read_tinyimagenet",
    "restricted_load",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_maybe_gzip(path: Path) -> bytes:
    """Read a file, transparently decompressing gzip (detected by its magic bytes)."""
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
    raw = _read_maybe_gzip(p)
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


# --------------------------------------------------------------------------------------------
# CIFAR, python-pickle version
# --------------------------------------------------------------------------------------------

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
    p = Path(path)
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
        raw = np.fromfile(f, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(
                f"{f} has {raw.size} bytes, not a positive multiple of the {record}-byte CIFAR "
                "record; it is truncated or corrupt; delete it and download it again"
            )
        recs = raw.reshape(-1, record)
        labels.append(recs[:, label_index].astype(np.int64))
        images.append(recs[:, label_bytes:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------------------------
# Tiny ImageNet
# --------------------------------------------------------------------------------------------

_TINY_SIZE = 64
_CACHE_VERSION = 1


def _decode_rgb(path: Path) -> np.ndarray:
    """Decode one image file to ``(3, 64, 64)`` uint8 (RGB, resized if needed)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if rgb.size != (_TINY_SIZE, _TINY_SIZE):
                rgb = rgb.resize((_TINY_SIZE, _TINY_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()
    except OSError as exc:
        raise DataError(f"cannot decode image {path} ({exc}); the file is corrupt") from exc


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


def _fingerprint(root: Path, files: list[Path], labels: list[int]) -> str:
    """Hash the listing (relative paths, sizes, labels) so a changed folder rebuilds the cache."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}".encode())
    for p, lab in zip(files, labels):
        try:
            size = p.stat().st_size
        except (OSError, ValueError) as exc:
            raise DataError(f"{p} is listed but cannot be read ({exc})") from exc
        h.update(f"{p.relative_to(root).as_posix()}\0{size}\0{lab}\n".encode())
    return h.hexdigest()


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "neuralign"


def _cache_candidates(root: Path, split: str, cache_dir: Path | None) -> list[Path]:
    name = f"neuralign-cache-{split}.npz"
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    fallback = (cache_dir or _default_cache_dir()) / "tinyimagenet" / tag / name
    return [root / name, fallback]


def _load_cache(
    path: Path, key: str, count: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(images, labels)``, or None when missing, stale, corrupt or malformed.

    A cache is a derived file: anything wrong with it means "decode again", never an error.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                logger.info("cache %s is stale; rebuilding", path)
                return None
            images, labels = z["images"], z["labels"]
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        TypeError,
        MemoryError,
        zlib.error,
        zipfile.BadZipFile,
    ) as exc:
        logger.warning("ignoring unreadable cache %s (%s)", path, exc)
        return None
    n = images.shape[0] if images.ndim else -1
    if (
        images.dtype != np.uint8
        or images.shape[1:] != (3, _TINY_SIZE, _TINY_SIZE)
        or labels.dtype != np.int64
        or labels.shape != (n,)
        or (count is not None and n != count)
    ):
        logger.warning("ignoring malformed cache %s", path)
        return None
    return images, labels


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray, key: str) -> bool:
    """Write the cache atomically; return False if the location is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, key=np.asarray(key))
        os.replace(tmp, path)
        return True
    except OSError:
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_tinyimagenet(
    root: str | os.PathLike[str],
    split: str,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 8,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a ``tiny-imagenet-200`` directory, decoding once and caching as ``.npz``.

    Classes are the wnids of ``wnids.txt`` in sorted order (the convention of folder-based
    loaders). ``split="train"`` reads ``train/<wnid>/images/*``; ``split="test"`` reads the
    labelled validation set (``val/images`` + ``val/val_annotations.txt``), because the official
    test labels are not public. Images are converted to RGB (a few originals are grayscale)
    and resized to 64×64 if needed.

    The decoded arrays are cached as ``neuralign-cache-<split>.npz`` in ``root``, or, if that is
    not writable, under ``cache_dir`` (default ``~/.cache/neuralign``). The cache stores a
    fingerprint of the file listing and is rebuilt if the folder changes.

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
    key = _fingerprint(r, files, labels)
    candidates = _cache_candidates(r, split, Path(cache_dir) if cache_dir is not None else None)
    for c in candidates:
        hit = _load_cache(c, key, len(files))
        if hit is not None:
            logger.debug("tinyimagenet %s loaded from cache %s", split, c)
            return hit[0], hit[1], wnids
    logger.info("decoding %d tinyimagenet %s images (once; cached afterwards)", len(files), split)
    images = np.empty((len(files), 3, _TINY_SIZE, _TINY_SIZE), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, arr in enumerate(pool.map(_decode_rgb, files)):
            images[i] = arr
    lab = np.asarray(labels, dtype=np.int64)
    for c in candidates:
        if _write_cache(c, images, lab, key):
            logger.info("cached tinyimagenet %s at %s", split, c)
            break
    else:
        logger.warning("could not write a tinyimagenet cache in %s", [str(c) for c in candidates])
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


def read_csv_gz(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a (possibly gzip-compressed) comma-separated file of integers.

    Args:
        path: CSV file.

    Returns:
        A 2-D ``int64`` array.

    Raises:
        DataError: If the file cannot be parsed.
    """
    p = Path(path)
    raw = _read_maybe_gzip(p)
    try:
        arr = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{p} is not a CSV of integers ({exc})") from exc
    return arr
