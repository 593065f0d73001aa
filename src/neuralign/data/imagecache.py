"""Decode image files once and cache them as a uint8 ``.npz`` next to the data.

Shared by the folder-based families (Tiny ImageNet, your own image folders): the listing
(relative paths, sizes, labels) is fingerprinted, and a cache whose fingerprint, shape or
count does not match is rebuilt — a cache is a derived file, anything wrong with it means
"decode again", never an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from neuralign.errors import DataError
from neuralign.io.atomic import new_file_mode

__all__ = ["cached_decode", "decode_image", "fingerprint", "load_cache", "write_cache"]

logger = logging.getLogger(__name__)

#: Bump when the decoding changes, so old caches are rebuilt.
CACHE_VERSION = 1

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def decode_image(path: Path, channels: int = 3, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to ``(channels, H, W)`` uint8.

    Args:
        path: PNG or JPEG file.
        channels: 3 (RGB) or 1 (grayscale); the image is converted.
        size: ``(height, width)`` to resize to (bilinear), or None to keep the file's size.

    Raises:
        DataError: If the file cannot be decoded.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            conv = im.convert("RGB" if channels == 3 else "L")
            if size is not None and conv.size != (size[1], size[0]):
                conv = conv.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(conv, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {path} ({exc}); the file is corrupt") from exc
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy()


def fingerprint(root: Path, files: Sequence[Path], labels: Sequence[int], extra: str = "") -> str:
    """Hash the listing (relative paths, sizes, labels) so a changed folder rebuilds the cache."""
    h = hashlib.sha256(f"v{CACHE_VERSION}{extra}".encode())
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


def cache_candidates(
    root: Path, family: str, split: str, cache_dir: Path | None, prefix: str = ""
) -> list[Path]:
    """Where the cache of a split may live: in ``root``, else under the user cache folder."""
    name = f"{prefix}neuralign-cache-{split}.npz"
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    fallback = (cache_dir or _default_cache_dir()) / family / tag / name
    return [root / name, fallback]


def load_cache(
    path: Path, key: str, shape: tuple[int, ...] | None = None, count: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(images, labels)``, or None when missing, stale, corrupt or malformed.

    Args:
        path: Cache file.
        key: Expected fingerprint.
        shape: Expected per-sample shape ``(C, H, W)``, or None for any 3-d shape.
        count: Expected number of samples, or None.
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
        or images.ndim != 4
        or (shape is not None and images.shape[1:] != tuple(shape))
        or labels.dtype != np.int64
        or labels.shape != (n,)
        or (count is not None and n != count)
    ):
        logger.warning("ignoring malformed cache %s", path)
        return None
    return images, labels


def write_cache(path: Path, images: np.ndarray, labels: np.ndarray, key: str) -> bool:
    """Write the cache atomically; return False if the location is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, key=np.asarray(key))
        os.chmod(tmp, new_file_mode(path))  # mkstemp's 0600 would hide it from the group
        os.replace(tmp, path)
        return True
    except OSError:
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cached_decode(
    root: Path,
    files: Sequence[Path],
    labels: Sequence[int],
    shape: tuple[int, int, int],
    candidates: Sequence[Path],
    *,
    key_extra: str = "",
    workers: int = 8,
    what: str = "images",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` to ``(N, *shape)`` uint8, or read them from the first valid cache.

    Every image is converted to ``shape[0]`` channels and resized to ``shape[1:]``.

    Returns:
        ``(images (N, C, H, W) uint8, labels (N,) int64)``.

    Raises:
        DataError: If an image cannot be decoded.
    """
    key = fingerprint(root, files, labels, f"{key_extra}{shape}")
    for c in candidates:
        hit = load_cache(c, key, shape, len(files))
        if hit is not None:
            logger.debug("%s loaded from cache %s", what, c)
            return hit
    logger.info("decoding %d %s (once; cached afterwards)", len(files), what)
    images = np.empty((len(files), *shape), dtype=np.uint8)
    size = (shape[1], shape[2])
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, arr in enumerate(pool.map(lambda p: decode_image(p, shape[0], size), files)):
            images[i] = arr
    lab = np.asarray(labels, dtype=np.int64)
    for c in candidates:
        if write_cache(c, images, lab, key):
            logger.info("cached %s at %s", what, c)
            break
    else:
        logger.warning("could not write a cache for %s in %s", what, [str(c) for c in candidates])
    return images, lab
