"""Your own data: a folder of class sub-folders of images, or a tensor file.

Both are usable wherever a dataset name is (``load_dataset``, ``--dataset``, the experiment
config's ``data.dataset``):

``folder:PATH`` (or a path to a directory)
    One sub-folder per class holding PNG/JPEG files; classes are the sub-folder names in sorted
    order (label ``i`` = ``i``-th name). If ``PATH/train/`` and ``PATH/test/`` exist, they are the
    splits (each with the same class sub-folders; the test split may lack a class). Otherwise the
    images of ``PATH`` are split 80/20, stratified per class, with a fixed seed (0) — the same
    split on every machine (:func:`~neuralign.data.datasets.stratified_split`). All images must
    have the same height and width; they are stored with 1 channel if every file is grayscale,
    else 3 (RGB). The decoded split is cached as uint8 under ``~/.cache/neuralign/folder/``
    (the data folder itself is never written) and rebuilt when the listing changes.

``tensors:PATH`` (or a path ending in ``.npz`` / ``.safetensors``)
    A file holding ``images`` (uint8, ``(N, C, H, W)`` or ``(N, H, W)``) and ``labels``
    (integers in ``[0, K)``), split 80/20 as above; or ``train_images``/``train_labels``/
    ``test_images``/``test_labels`` for explicit splits. An ``.npz`` may add ``classes``
    (an array of K strings). The number of classes is ``num_classes`` if the file holds it,
    else the largest label + 1.

Statistics (mean/std) are computed from the training split. Problems — mixed image sizes, an
empty class folder, an unreadable or non-image file, bad arrays — raise
:class:`~neuralign.errors.DataError` naming the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralign.data import imagecache
from neuralign.data.datasets import Dataset, stats_of, stratified_split, to_dataset
from neuralign.errors import DataError
from neuralign.io.files import regular_file

if TYPE_CHECKING:
    from neuralign.data.registry import DatasetSpec

__all__ = ["is_folder_path", "is_tensor_file", "load_folder", "load_tensor_file"]

logger = logging.getLogger(__name__)

TENSOR_SUFFIXES = (".npz", ".safetensors")

#: Fraction of the images held out as the test split when the data have no explicit split.
TEST_FRACTION = 0.2
#: Seed of that split.
SPLIT_SEED = 0


def _path_part(name: str, prefix: str) -> Path:
    body = name[len(prefix) + 1 :] if name.lower().startswith(prefix + ":") else name
    if not body.strip():
        raise DataError(f"{name!r}: give a path after '{prefix}:'")
    return Path(body.strip()).expanduser()


def is_folder_path(name: str) -> bool:
    """True if ``name`` is a path (has a separator or starts with ``.``/``~``) to a directory."""
    looks = os.sep in name or "/" in name or name.startswith((".", "~"))
    return looks and Path(name).expanduser().is_dir()


def is_tensor_file(name: str) -> bool:
    """True if ``name`` ends in ``.npz`` or ``.safetensors``."""
    return name.lower().endswith(TENSOR_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not dirs:
        raise DataError(f"{root} has no class sub-folders; put each class's images in its own")
    return dirs


def _list_images(class_dir: Path) -> list[Path]:
    files = sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in imagecache.IMAGE_SUFFIXES
    )
    others = [
        p.name
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p not in files
    ]
    if others:
        logger.warning(
            "%s: ignoring %d non-image files (e.g. %s)", class_dir, len(others), others[0]
        )
    return files


def _probe(files: list[Path]) -> tuple[int, int, int]:
    """``(channels, height, width)`` shared by every file; raise on mixed sizes or bad files."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], Path] = {}
    gray = True
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.setdefault((im.height, im.width), p)
                gray = gray and im.mode in ("1", "L", "I", "I;16", "F")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"cannot read image {p} ({exc}); remove or replace the file") from None
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise DataError(
                f"images of different sizes: {pa} is {a[0]}x{a[1]}, {pb} is {b[0]}x{b[1]} "
                "(height x width); resize them to one size first"
            )
    (h, w), _ = next(iter(sizes.items()))
    return (1 if gray else 3), h, w


def _folder_listing(directory: Path, names: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for label, cname in enumerate(names):
        cdir = directory / cname
        if not cdir.is_dir():
            continue
        found = _list_images(cdir)
        if not found:
            raise DataError(
                f"class folder {cdir} holds no PNG/JPEG images; remove it or add images"
            )
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels


def read_image_folder(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Decode an image folder (see the module docstring for the layout) into both splits.

    Returns:
        ``{"train": (images, labels), "test": (images, labels), "classes": names,
        "explicit_split": bool}`` with uint8 ``(N, C, H, W)`` images and int64 labels.

    Raises:
        DataError: Missing folder, no classes, an empty class, mixed sizes, an unreadable file.
    """
    r = Path(root).expanduser()
    if not r.is_dir():
        raise DataError(f"image folder {r} does not exist or is not a directory")
    explicit = (r / "train").is_dir() and (r / "test").is_dir()
    if explicit:
        names = [p.name for p in _class_dirs(r / "train")]
        extra = sorted({p.name for p in _class_dirs(r / "test")} - set(names))
        if extra:
            raise DataError(
                f"{r / 'test'} has class folder(s) {extra} that {r / 'train'} lacks; "
                "both splits need the same class names"
            )
        listings = {s: _folder_listing(r / s, names) for s in ("train", "test")}
    else:
        names = [p.name for p in _class_dirs(r)]
        listings = {"all": _folder_listing(r, names)}
    every = [f for files, _ in listings.values() for f in files]
    shape = _probe(every)
    out: dict[str, Any] = {"classes": names, "explicit_split": explicit}
    for split, (files, labels) in listings.items():
        if not files:
            raise DataError(f"no images found under {r / split if explicit else r}")
        candidates = imagecache.cache_candidates(r, "folder", split, None)[1:]
        out[split] = imagecache.cached_decode(
            r, files, labels, shape, candidates, what=f"{r} {split} images"
        )
    if not explicit:
        images, labels = out.pop("all")
        for split in ("train", "test"):
            idx = stratified_split(labels, split, TEST_FRACTION, SPLIT_SEED)
            out[split] = (images[idx], labels[idx])
    return out


def load_folder(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    """Family loader of ``folder:PATH`` (and bare directory paths)."""
    path = _path_part(name, "folder")
    data = read_image_folder(path)
    images, labels = data[split]
    classes = data["classes"]
    return to_dataset(images, labels, name, len(classes), classes, stats_of(data["train"][0]))


# --------------------------------------------------------------------------------------------
# Tensor files
# --------------------------------------------------------------------------------------------


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"tensor file {path} does not exist")
    regular_file(path, "tensor file", DataError)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except Exception as exc:  # any reader failure means: not a readable tensor file
        raise DataError(
            f"cannot read tensor file {path} ({type(exc).__name__}: {exc}); it must be an .npz "
            "or .safetensors file with 'images' and 'labels'"
        ) from None


def _images(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 (0..255), got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[0] == 0 or min(arr.shape[1:]) == 0:
        raise DataError(f"{where}: images must be (N, C, H, W) or (N, H, W), got {arr.shape}")
    if arr.shape[1] > 4 and arr.shape[3] in (1, 3):
        raise DataError(
            f"{where}: images look channels-last {arr.shape}; store them as (N, C, H, W)"
        )
    return arr


def _labels(arr: np.ndarray, n: int, where: str) -> np.ndarray:
    if arr.dtype.kind not in "iu" or arr.shape != (n,):
        raise DataError(
            f"{where}: labels must be {n} integers (shape ({n},)), got {arr.dtype} {arr.shape}"
        )
    lab = arr.astype(np.int64)
    if lab.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {int(lab.min())}")
    return lab


def read_tensor_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a tensor file (see the module docstring) into both splits.

    Returns:
        ``{"train": (images, labels), "test": (images, labels), "num_classes": K,
        "classes": names or None, "explicit_split": bool}``.

    Raises:
        DataError: Unreadable file, missing or malformed arrays.
    """
    p = Path(path).expanduser()
    arrays = _read_arrays(p)
    explicit = all(f"{s}_{k}" in arrays for s in ("train", "test") for k in ("images", "labels"))
    out: dict[str, Any] = {"explicit_split": explicit}
    if explicit:
        for s in ("train", "test"):
            x = _images(arrays[f"{s}_images"], f"{p}:{s}_images")
            out[s] = (x, _labels(arrays[f"{s}_labels"], x.shape[0], f"{p}:{s}_labels"))
        if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
            raise DataError(
                f"{p}: train images {out['train'][0].shape[1:]} and test images "
                f"{out['test'][0].shape[1:]} differ in shape"
            )
    elif "images" in arrays and "labels" in arrays:
        x = _images(arrays["images"], f"{p}:images")
        y = _labels(arrays["labels"], x.shape[0], f"{p}:labels")
        for s in ("train", "test"):
            idx = stratified_split(y, s, TEST_FRACTION, SPLIT_SEED)
            out[s] = (x[idx], y[idx])
    else:
        raise DataError(
            f"{p} holds {sorted(arrays)}; expected 'images' and 'labels' (or train_images, "
            "train_labels, test_images, test_labels)"
        )
    top = max(int(out[s][1].max()) for s in ("train", "test") if out[s][1].size)
    k = int(np.asarray(arrays["num_classes"]).item()) if "num_classes" in arrays else top + 1
    if k <= top:
        raise DataError(f"{p}: num_classes={k} but a label is {top}")
    classes = None
    if "classes" in arrays:
        classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
        if len(classes) != k:
            raise DataError(f"{p}: {len(classes)} class names for {k} classes")
    out["num_classes"], out["classes"] = k, classes
    return out


def load_tensor_file(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    """Family loader of ``tensors:PATH`` (and bare ``.npz`` / ``.safetensors`` paths)."""
    data = read_tensor_file(_path_part(name, "tensors"))
    images, labels = data[split]
    k = data["num_classes"]
    classes = data["classes"] or [f"class{i}" for i in range(k)]
    return to_dataset(images, labels, name, k, classes, stats_of(data["train"][0]))
