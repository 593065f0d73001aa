"""Synthetic datasets: seeded, learnable class-conditional images, no files needed.

``synthetic[:key=value,...]`` with keys ``channels`` (3), ``size`` (32), ``classes`` (10),
``train`` (5000 samples), ``test`` (1000 samples), ``seed`` (0).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from neuralign.data.datasets import Dataset, stats_of, to_dataset
from neuralign.errors import DataError

if TYPE_CHECKING:
    from neuralign.data.registry import DatasetSpec

__all__ = ["load_synthetic", "parse_synthetic_name"]

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


def load_synthetic(
    spec: DatasetSpec,
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    download: bool,
) -> Dataset:
    """Family loader of ``synthetic[:options]`` (statistics computed from the train split)."""
    name = name.strip().lower()
    p = parse_synthetic_name(name)
    images, labels = _synthetic_split(p, split)
    train = images if split == "train" else _synthetic_split(p, "train")[0]
    classes = [f"class{i}" for i in range(p["classes"])]
    return to_dataset(images, labels, name, p["classes"], classes, stats_of(train))
