"""Class-balanced subsets."""

from __future__ import annotations

import logging

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


def test_whole_split_when_asking_for_all(caplog: pytest.LogCaptureFixture) -> None:
    ds = _dataset()  # 30/12/20: not balanceable at its full size
    for n in (62, 63, 10_000):
        with caplog.at_level(logging.INFO, logger="neuralign.data.subset"):
            caplog.clear()
            sub = balanced_subset(ds, n=n)
        assert sub.images.equal(ds.images) and sub.labels.equal(ds.labels)
        assert "using the whole split" in caplog.text
    assert balanced_subset(ds, fraction=1.0).labels.equal(ds.labels)


def test_unbalanceable_falls_back_to_stratified(caplog: pytest.LogCaptureFixture) -> None:
    ds = _dataset()  # class 1 has 12 < 40 // 3 + 1
    with caplog.at_level(logging.WARNING, logger="neuralign.data.subset"):
        sub = balanced_subset(ds, n=40, seed=3)
    assert "stratified proportional" in caplog.text and "class 1 has 12" in caplog.text
    counts = sub.class_counts().tolist()
    assert sum(counts) == 40
    # proportional to 30/12/20 of 62: exact shares 19.35, 7.74, 12.90
    assert counts == [19, 8, 13]
    ids = sub.images[:, 0, 0, 0].long()
    assert ids.tolist() == sorted(set(ids.tolist())) and ds.labels[ids].equal(sub.labels)
    assert balanced_subset(ds, n=40, seed=3).images.equal(sub.images)  # deterministic
    for n in range(37, 62):  # every size works and fits every class
        c = balanced_subset(ds, n=n, seed=n).class_counts()
        assert int(c.sum()) == n and bool((c <= ds.class_counts()).all())


def test_impossible_requests() -> None:
    ds = _dataset()
    with pytest.raises(DataError, match="exactly one"):
        balanced_subset(ds)
    with pytest.raises(DataError, match="exactly one"):
        balanced_subset(ds, n=3, fraction=0.1)
    with pytest.raises(DataError, match="fraction"):
        balanced_subset(ds, fraction=1.5)
    with pytest.raises(DataError, match="n must be"):
        balanced_subset(ds, n=0)
    single = Dataset(ds.images[:4], torch.tensor([2, 2, 2, 2]), 3, "toy", (0.1,), (0.2,))
    with pytest.raises(DataError, match="only 1 of its 3 classes"):
        balanced_subset(single, n=3)


def test_absent_classes_fall_back_to_stratified(caplog: pytest.LogCaptureFixture) -> None:
    """A small slice of a dataset (CIFAR fixtures: 15 images of 10 classes)."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    part = Dataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), labels, 3, "toy", (0.1,), (0.2,))
    with caplog.at_level(logging.WARNING, logger="neuralign.data.subset"):
        sub = balanced_subset(part, n=5)
    assert "1 of its 3 classes have no sample" in caplog.text
    assert sub.class_counts().tolist() == [2, 3, 0]
