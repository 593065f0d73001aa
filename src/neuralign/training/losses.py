"""Losses shared by endpoint and curve training."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from neuralign.models.common import split_logits


def classification_loss(
    out: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor, aux_weight: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the main logits plus ``aux_weight`` × CE of each auxiliary head.

    Returns:
        ``(loss, logits)``: the scalar loss to optimise and the main logits.
    """
    logits, aux = split_logits(out)
    loss = F.cross_entropy(logits.float(), y)
    for a in aux:
        loss = loss + aux_weight * F.cross_entropy(a.float(), y)
    return loss, logits
