"""Averaging state dicts (the merge itself, once the units are aligned)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["average_states"]


def average_states(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float] | None = None
) -> dict[str, Tensor]:
    """The (weighted) mean of state dicts with the same keys and shapes.

    Floating-point entries are averaged (in float64, cast back); integer entries (such as
    BatchNorm's ``num_batches_tracked``) are taken from the first state. BatchNorm running
    statistics are averaged too, which is wrong for the merged network: recompute them
    (:func:`neuralign.paths.recompute_bn`) before using it.

    Args:
        states: Two or more state dicts.
        weights: One non-negative weight per state (normalised); default equal weights.

    Returns:
        A new state dict.
    """
    if len(states) < 1:
        raise ValueError("average_states needs at least one state")
    w = torch.tensor(
        [1.0] * len(states) if weights is None else [float(x) for x in weights],
        dtype=torch.float64,
    )
    w = w / w.sum()
    out: dict[str, Tensor] = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            out[key] = first.clone()
            continue
        acc = torch.zeros_like(first, dtype=torch.float64)
        for wi, s in zip(w.tolist(), states):
            acc += wi * s[key].to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out
