"""Class-balanced subsets."""

from __future__ import annotations

import pytest
import torch

from neuralign.data import Dataset, balanced_subset
from neuralign.errors import DataError


def _dataset() -> Dataset:
    labels = torch.tensor([0] * 30 + [1] * 12 + [2] * 20)
    labels = labels[torch.randperm(62, generator=torch.Generator().manual_seed(0))]
    imgs = torch.arange(62, dtype=torch.uint8)[:, None, None, None].expand(62, 1, 2, 2).clone()
    return Dataset(imgs, labels, 3, "toy", (0.1,), (0.2,), ["a", "b", "c"])


def test_balanced_counts_and_determinism() -> None:
    ds = _dataset()
    sub = balanced_subset(ds, n=30, seed=1)
    assert sub.class_counts().tolist() == [10, 10, 10]
    again = balanced_subset(ds, n=30, seed=1)
    assert sub.images.equal(again.images) and sub.labels.equal(again.labels)
    other = balanced_subset(ds, n=30, seed=2)
    assert not sub.images.equal(other.images)
    ids = sub.images[:, 0, 0, 0].long()
    assert ids.tolist() == sorted(set(ids.tolist()))  # unique, dataset order
    assert ds.labels[ids].equal(sub.labels)
    assert sub.classes == ds.classes and sub.mean == ds.mean and len(ds) == 62


def test_remainder_and_fraction() -> None:
    ds = _dataset()
    counts = balanced_subset(ds, n=31).class_counts()
    assert int(counts.sum()) == 31 and int(counts.max() - counts.min()) <= 1
    assert len(balanced_subset(ds, fraction=0.5)) == 31


def test_impossible_requests() -> None:
    ds = _dataset()
    with pytest.raises(DataError, match="class 1 has 12"):
        balanced_subset(ds, n=40)
    with pytest.raises(DataError, match="exactly one"):
        balanced_subset(ds)
    with pytest.raises(DataError, match="exactly one"):
        balanced_subset(ds, n=3, fraction=0.1)
    with pytest.raises(DataError, match="fraction"):
        balanced_subset(ds, fraction=1.5)
    with pytest.raises(DataError, match="n must be"):
        balanced_subset(ds, n=0)
