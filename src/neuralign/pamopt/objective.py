"""The PAM objective: the loss along the curve :math:`\\varphi_{P,\\psi}(t)` on fixed batches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign import distributed as dist_
from neuralign.curves.base import functional_forward, interpolated_keys
from neuralign.curves.bezier import bernstein
from neuralign.errors import ConfigError
from neuralign.models.common import split_logits
from neuralign.optim.runner import restore_modes

__all__ = ["curve_point", "first_batches", "full_state", "line_fracs", "pam_objective"]

State = dict[str, Tensor]


def line_fracs(num_bends: int) -> list[float]:
    """Positions :math:`k/(n-1)` of the interior control points on the line."""
    return [k / (num_bends - 1) for k in range(1, num_bends - 1)]


def curve_point(
    theta1: Mapping[str, Tensor],
    ptheta2: Mapping[str, Tensor],
    psi: Sequence[Mapping[str, Tensor]],
    keys: Sequence[str],
    t: float,
) -> State:
    """Interpolated entries of :math:`\\varphi(t) = (1-t)\\theta_1 + tP\\theta_2 +
    \\sum_k b_k(t)\\psi_k` (differentiable in ``ptheta2``)."""
    coeffs = bernstein(t, len(psi) + 2)[1:-1]
    out: State = {}
    for key in keys:
        acc = (1.0 - t) * theta1[key] + t * ptheta2[key]
        for c, p in zip(coeffs, psi, strict=True):
            acc = acc + c * p[key]
        out[key] = acc
    return out


def full_state(
    model: nn.Module, theta1: Mapping[str, Tensor], interp: Mapping[str, Tensor]
) -> State:
    """A full state dict: ``interp``'s entries, the rest copied from :math:`\\theta_1`."""
    # Non-interpolated entries (BN running statistics) are fresh copies of θ₁'s: BatchNorm
    # updates them in place in train mode, and that must not leak anywhere.
    return {k: interp[k] if k in interp else theta1[k].clone() for k in model.state_dict()}


def first_batches(data: Iterable[Any], n: int) -> list[tuple[Tensor, Tensor]]:
    """The first ``n`` batches of epoch 0 of ``data`` (the default scoring batches)."""
    if hasattr(data, "set_epoch"):
        data.set_epoch(0)
    out: list[tuple[Tensor, Tensor]] = []
    for x, y in data:
        out.append((x, y))
        if len(out) >= n:
            break
    if not out:
        raise ConfigError("PAM: the training data yielded no batch")
    return out


def pam_objective(
    model: nn.Module,
    theta1: Mapping[str, Tensor],
    ptheta2: Mapping[str, Tensor],
    psi: Sequence[Mapping[str, Tensor]],
    batches: Iterable[tuple[Tensor, Tensor]],
    ts: Sequence[float] = (0.25, 0.5, 0.75),
    *,
    reduce: bool = True,
) -> float:
    """The PAM objective :math:`\\hat F = \\frac{1}{|T|}\\sum_{t \\in T}\\mathrm{CE}(\\varphi(t))`
    on fixed batches.

    BatchNorm uses batch statistics (train mode, as in training: no recomputation), through a
    functional call, so the module's buffers are untouched; its train/eval flags are
    restored. Only the main head's loss counts.

    Args:
        model: The architecture.
        theta1: Endpoint A's state dict.
        ptheta2: Endpoint B's state dict with :math:`P` applied (hard or relaxed).
        psi: One offset dict per interior control point (interpolated keys).
        batches: Fixed ``(x, y)`` batches (on the model's device).
        ts: Points of the curve averaged over.
        reduce: In a distributed run, sum loss and count over the ranks' batches (every
            rank then returns the same value, so all choose the same rounding candidate).

    Returns:
        The sample-weighted mean cross-entropy, averaged over ``ts``.
    """
    keys = interpolated_keys(model)
    sums = torch.zeros(2, dtype=torch.float64, device=next(iter(theta1.values())).device)
    with torch.no_grad(), restore_modes([model]):
        model.train()
        for t in ts:
            interp = curve_point(theta1, ptheta2, psi, keys, float(t))
            for x, y in batches:
                state = full_state(model, theta1, interp)
                logits, _ = split_logits(functional_forward(model, state, x))
                sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
                sums[1] += y.shape[0]
    if reduce and dist_.is_distributed():
        dist_.all_reduce_(sums)
    total, count = sums.tolist()
    return total / max(count, 1.0)
