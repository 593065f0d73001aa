"""The in-memory dataset split and the helpers every dataset family shares.

A :class:`Dataset` is the whole split in memory: ``images`` uint8 ``(N, C, H, W)`` and
``labels`` int64 ``(N,)``, plus the per-channel mean and standard deviation of the *training*
split in [0, 1] units (the model, not the data pipeline, normalises).

>>> from neuralign.data import load_dataset
>>> ds = load_dataset("synthetic:size=8,train=40,test=20", split="test")
>>> tuple(ds.images.shape), ds.num_classes
((20, 3, 8, 8), 10)

Which datasets exist, and where each is looked for, is the registry's business
(:mod:`neuralign.data.registry`, rows in :mod:`neuralign.data.catalog`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neuralign.errors import DataError

__all__ = [
    "SPLITS",
    "Dataset",
    "DatasetInfo",
    "SYSTEM_DIR",
    "Stats",
    "default_data_root",
    "download_dir",
    "not_found",
    "search_roots",
    "stats_of",
    "stratified_split",
    "to_dataset",
]

SPLITS = ("train", "test")

#: Per-channel ``(mean, std)`` of a training split, in [0, 1] units.
Stats = tuple[tuple[float, ...], tuple[float, ...]]

#: Where Debian's ``dataset-*`` packages put their files (searched after the download root).
SYSTEM_DIR = Path("/usr/share/datasets")


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


def search_roots(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Directories to search: the caller's, else the download root and :data:`SYSTEM_DIR`."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    return [default_data_root(), SYSTEM_DIR]


def download_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Where downloads go: ``data_dir`` if given, else :func:`default_data_root`."""
    return Path(data_dir) if data_dir is not None else default_data_root()


def to_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    name: str,
    num_classes: int,
    classes: Sequence[str] | None,
    stats: Stats,
) -> Dataset:
    """Wrap numpy arrays (uint8 images, integer labels) as a validated :class:`Dataset`."""
    mean, std = stats
    return Dataset(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
        labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        num_classes=num_classes,
        name=name,
        mean=mean,
        std=std,
        classes=list(classes) if classes is not None else None,
    )


def stats_of(images: torch.Tensor | np.ndarray, chunk: int = 4096) -> Stats:
    """Per-channel mean and population std of uint8 images ``(N, C, H, W)``, in [0, 1] units.

    Accumulated in float64 over chunks of ``chunk`` images, so memory stays small.
    """
    t = torch.as_tensor(images)
    c = t.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, t.shape[0], chunk):
        x = t[start : start + chunk].double().div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = max(1, t.shape[0] * t.shape[2] * t.shape[3])
    mean = total / count
    var = (squares / count - mean.square()).clamp_(min=0.0)
    return tuple(mean.tolist()), tuple(var.sqrt().tolist())


def stratified_split(
    labels: np.ndarray, split: str, test_fraction: float = 0.2, seed: int = 0
) -> np.ndarray:
    """Indices of a deterministic stratified split (same answer on every machine).

    Each class is shuffled with a seeded generator and its first ``round(n * test_fraction)``
    samples form the test split; the indices come back sorted.
    """
    gen = torch.Generator().manual_seed(seed)
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        perm = idx[torch.randperm(idx.size, generator=gen).numpy()]
        n_test = int(round(idx.size * test_fraction))
        chosen.append(perm[:n_test] if split == "test" else perm[n_test:])
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen))


def not_found(name: str, searched: Sequence[Path], hint: str) -> DataError:
    """The error for a dataset whose files are in none of the searched directories."""
    where = ", ".join(str(p) for p in searched)
    return DataError(f"{name} not found (looked in {where}); {hint}")
