"""Losses shared by endpoint and curve training."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def split_output(out: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Split a model output into ``(logits, aux_logits)``; a plain tensor has no aux heads."""
    if isinstance(out, torch.Tensor):
        return out, []
    items = list(out)
    return items[0], items[1:]


def classification_loss(
    out: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor, aux_weight: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the main logits plus ``aux_weight`` × CE of each auxiliary head.

    Returns:
        ``(loss, logits)``: the scalar loss to optimise and the main logits.
    """
    logits, aux = split_output(out)
    loss = F.cross_entropy(logits.float(), y)
    for a in aux:
        loss = loss + aux_weight * F.cross_entropy(a.float(), y)
    return loss, logits
