"""Deterministic class-balanced subsets of a dataset."""

from __future__ import annotations

import torch

from neuralign.data.datasets import Dataset
from neuralign.errors import DataError

__all__ = ["balanced_subset"]


def balanced_subset(
    dataset: Dataset, n: int | None = None, fraction: float | None = None, seed: int = 0
) -> Dataset:
    """Draw a class-balanced subset, the same for the same ``seed``.

    Every class gets ``n // num_classes`` samples; the ``n % num_classes`` remaining ones go to
    classes picked at random (seeded), so class counts differ by at most one. Samples within a
    class are drawn without replacement; the subset keeps the dataset's order.

    Args:
        dataset: Source dataset (not modified).
        n: Subset size. Exactly one of ``n`` and ``fraction`` must be given.
        fraction: Subset size as a fraction of ``len(dataset)`` (rounded to the nearest int).
        seed: Seed of the draw.

    Returns:
        A new :class:`Dataset` with the same metadata.

    Raises:
        DataError: If both or neither size is given, or a class has too few samples.
    """
    if (n is None) == (fraction is None):
        raise DataError("balanced_subset: pass exactly one of n= and fraction=")
    if len(dataset) == 0:
        raise DataError(f"balanced_subset: {dataset.name!r} is empty; check the dataset files")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"balanced_subset: fraction must be in (0, 1], got {fraction}")
        n = int(round(fraction * len(dataset)))
    assert n is not None
    if n < 1 or n > len(dataset):
        raise DataError(f"balanced_subset: n must be in [1, {len(dataset)}], got {n}")
    k = dataset.num_classes
    gen = torch.Generator().manual_seed(seed)
    per_class = torch.full((k,), n // k, dtype=torch.int64)
    per_class[torch.randperm(k, generator=gen)[: n % k]] += 1
    counts = dataset.class_counts().cpu()
    absent = (counts == 0).nonzero().flatten().tolist()
    if absent and int(per_class[absent].max()) > 0:
        present = k - len(absent)
        raise DataError(
            f"balanced_subset: {dataset.name!r} has no samples of class(es) {absent[:10]} "
            f"(only {present} of its {k} classes are present); a class-balanced subset "
            "needs every class: is the dataset truncated or filtered?"
        )
    short = (per_class > counts).nonzero().flatten().tolist()
    if short:
        c = short[0]
        raise DataError(
            f"balanced_subset: cannot take {n} class-balanced samples from {dataset.name}: class "
            f"{c} has {int(counts[c])} samples but needs {int(per_class[c])}; ask for at most "
            f"{int(counts.min()) * k} samples"
        )
    labels = dataset.labels.cpu()
    chosen = []
    for c in range(k):
        if per_class[c] == 0:
            continue
        idx = (labels == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[: int(per_class[c])]])
    keep = torch.sort(torch.cat(chosen)).values.to(dataset.labels.device)
    return Dataset(
        images=dataset.images.index_select(0, keep.to(dataset.images.device)),
        labels=dataset.labels.index_select(0, keep),
        num_classes=dataset.num_classes,
        name=dataset.name,
        mean=dataset.mean,
        std=dataset.std,
        classes=None if dataset.classes is None else list(dataset.classes),
    )
