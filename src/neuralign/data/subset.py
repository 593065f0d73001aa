"""Deterministic class-balanced subsets of a dataset."""

from __future__ import annotations

import logging

import torch

from neuralign.data.datasets import Dataset
from neuralign.errors import DataError

__all__ = ["balanced_subset"]

logger = logging.getLogger(__name__)


def balanced_subset(
    dataset: Dataset, n: int | None = None, fraction: float | None = None, seed: int = 0
) -> Dataset:
    """Draw a class-balanced subset, the same for the same ``seed``.

    Every class gets ``n // num_classes`` samples; the ``n % num_classes`` remaining ones go to
    classes picked at random (seeded), so class counts differ by at most one. Samples within a
    class are drawn without replacement; the subset keeps the dataset's order.

    Two requests are answered rather than refused (docs/reliability.md, "Subsets"):

    * ``n >= len(dataset)`` (or ``fraction=1``) returns the whole split, logged at INFO:
      asking for everything gets everything, whatever its class balance.
    * When some class has fewer samples than its balanced share (or none at all, as in a
      small slice of a dataset), the subset is drawn stratified proportionally instead
      (each class keeps its share of the split, largest remainders rounded up), with a
      warning. Fewer than two classes present is refused.

    Args:
        dataset: Source dataset (not modified).
        n: Subset size. Exactly one of ``n`` and ``fraction`` must be given.
        fraction: Subset size as a fraction of ``len(dataset)`` (rounded to the nearest int).
        seed: Seed of the draw.

    Returns:
        A new :class:`Dataset` with the same metadata.

    Raises:
        DataError: If both or neither size is given, the size is not positive, the
            dataset is empty, or it holds fewer than two classes.
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
    if n < 1:
        raise DataError(f"balanced_subset: n must be >= 1, got {n}")
    if n >= len(dataset):
        logger.info(
            "balanced_subset: %d samples asked of %r, which has %d: using the whole split",
            n,
            dataset.name,
            len(dataset),
        )
        return _take(dataset, torch.arange(len(dataset), device=dataset.labels.device))
    k = dataset.num_classes
    gen = torch.Generator().manual_seed(seed)
    per_class = torch.full((k,), n // k, dtype=torch.int64)
    per_class[torch.randperm(k, generator=gen)[: n % k]] += 1
    counts = dataset.class_counts().cpu()
    absent = (counts == 0).nonzero().flatten().tolist()
    present = k - len(absent)
    if present < 2:
        raise DataError(
            f"balanced_subset: {dataset.name!r} has no samples of class(es) {absent[:10]} "
            f"(only {present} of its {k} classes are present); a subset of a classification "
            "set needs at least two classes: is the dataset truncated or filtered?"
        )
    short = (per_class > counts).nonzero().flatten().tolist()
    if short:
        c = short[0]
        why = (
            f"{len(absent)} of its {k} classes have no sample, e.g. {absent[:5]}"
            if absent
            else f"class {c} has {int(counts[c])} samples but needs {int(per_class[c])}"
        )
        logger.warning(
            "balanced_subset: cannot take %d class-balanced samples from %s (%s); drawing a "
            "stratified proportional subset instead (at most %d samples would be balanced)",
            n,
            dataset.name,
            why,
            int(counts.min()) * k,
        )
        per_class = _proportional(counts, n, gen)
    labels = dataset.labels.cpu()
    chosen = []
    for c in range(k):
        if per_class[c] == 0:
            continue
        idx = (labels == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[: int(per_class[c])]])
    keep = torch.sort(torch.cat(chosen)).values.to(dataset.labels.device)
    return _take(dataset, keep)


def _proportional(counts: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Per-class sizes summing to ``n`` in proportion to ``counts`` (largest remainder).

    Ties among equal remainders are broken at random (seeded); no class gets more samples
    than it has (``n < counts.sum()``, so the quotas fit).
    """
    total = int(counts.sum())
    exact = counts.double() * n / total
    per_class = exact.floor().to(torch.int64)
    rest = n - int(per_class.sum())
    if rest:
        frac = exact - per_class.double()
        # random tie-break: sort by (remainder, random key)
        key = frac + torch.rand(frac.shape, generator=gen, dtype=torch.float64) * 1e-9
        key[per_class >= counts] = -1.0
        per_class[torch.argsort(key, descending=True)[:rest]] += 1
    return per_class


def _take(dataset: Dataset, keep: torch.Tensor) -> Dataset:
    """A new :class:`Dataset` of the samples at ``keep`` (same metadata)."""
    return Dataset(
        images=dataset.images.index_select(0, keep.to(dataset.images.device)),
        labels=dataset.labels.index_select(0, keep),
        num_classes=dataset.num_classes,
        name=dataset.name,
        mean=dataset.mean,
        std=dataset.std,
        classes=None if dataset.classes is None else list(dataset.classes),
    )
