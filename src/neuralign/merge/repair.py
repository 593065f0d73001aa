"""REPAIR: renormalise the merged network's units to the endpoints' statistics.

Jordan et al., "REPAIR: REnormalizing Permuted Activations for Interpolation Repair"
(ICLR 2023), Sec. 3: averaging aligned networks shrinks the variance of the hidden units
("variance collapse"); REPAIR rescales each unit of the merged network so that the mean and
standard deviation of its *pre-activation* (the input of its nonlinearity) over data equal
the interpolation of the endpoints' — for an equal-weight merge of K models the average of
the K endpoints' means and of their standard deviations.

What is corrected, and where:

* A unit whose pre-activation is the output of a ``Linear`` / ``Conv`` layer with a bias (no
  normalisation in between, e.g. the zoo MLP): the affine correction
  ``y ← (y − μ_merged)·σ_goal/σ_merged + μ_goal`` is folded into that layer's weight rows and
  bias, so the merged model keeps its architecture and state-dict keys. Layers are corrected
  in forward order, each measured with the earlier corrections in place.
* A unit followed by BatchNorm (the pre-activation *is* the BN output): recomputing the BN
  running statistics, which every merge does, already sets the BN output's mean and scale to
  the averaged ``β`` and ``|γ|`` — the average of the endpoints' (their RESET, Sec. 3.3). Those
  units are left alone.
* Anything else (a layer without bias, a LayerNorm, a functional op) is skipped and listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from neuralign.perm import PermutationSpec
from neuralign.perm.taps import ActivationTap

__all__ = ["RepairReport", "repair"]


@dataclass
class RepairReport:
    """What :func:`repair` did.

    Attributes:
        corrected: ``"module[start:stop]"`` of every corrected block of units.
        by_batchnorm: groups left alone because BatchNorm already renormalises them.
        skipped: ``"group: reason"`` for units that could not be corrected.
    """

    corrected: list[str] = field(default_factory=list)
    by_batchnorm: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _moments(
    model: nn.Module, spec: PermutationSpec, group: str, data: Iterable[Any]
) -> list[tuple[Tensor, Tensor]]:
    """Per tap of ``group``: per-unit mean and std (population) of the pre-activation."""
    tap = ActivationTap(model, spec, groups=[group], pre_activation=True)
    was = model.training
    model.eval()
    sums: list[list[Tensor]] = []
    count = 0
    try:
        device = next(iter(model.parameters())).device
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            acts = tap(x.to(device)).get(group, [])
            if not sums:
                sums = [
                    [torch.zeros(a.shape[1], dtype=torch.float64, device=device)] * 2 for a in acts
                ]
            n = 0
            for i, a in enumerate(acts):
                a = a.detach().transpose(0, 1).reshape(a.shape[1], -1).double()
                sums[i] = [sums[i][0] + a.sum(1), sums[i][1] + a.square().sum(1)]
                n = a.shape[1]
            count += n
    finally:
        model.train(was)
    out = []
    for s, sq in sums:
        mean = s / max(count, 1)
        var = (sq / max(count, 1) - mean.square()).clamp_(min=0.0)
        out.append((mean, var.sqrt()))
    return out


def repair(
    merged: nn.Module,
    endpoints: Sequence[nn.Module],
    spec: PermutationSpec,
    data: Iterable[Any],
    *,
    weights: Sequence[float] | None = None,
    eps: float = 1e-5,
) -> RepairReport:
    """Apply REPAIR to ``merged`` in place (its weights change; see the module docstring).

    Args:
        merged: The averaged network (BatchNorm statistics already recomputed).
        endpoints: The aligned endpoints it was averaged from.
        spec: Their permutation spec (discovered: it carries the activation taps).
        data: A re-iterable of ``(x, y)`` batches (a non-augmented training subset).
        weights: Interpolation weights of the endpoints (default equal).
        eps: Added to the merged std before dividing.

    Returns:
        A :class:`RepairReport`.
    """
    k = len(endpoints)
    w = [1.0 / k] * k if weights is None else [float(x) / sum(weights) for x in weights]
    report = RepairReport()
    modules = dict(merged.named_modules())
    for gname, group in spec.groups.items():
        taps = [t for t in group.taps if t.mode == "eval"]
        if not taps:
            continue
        targets = [modules.get(t.pre_module) if t.pre_module else None for t in taps]
        if all(isinstance(m, _BatchNorm) for m in targets):
            report.by_batchnorm.append(gname)
            continue
        bad = [
            t
            for t, m in zip(taps, targets)
            if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
            or m.bias is None
            or t.dim != 1
        ]
        if bad:
            report.skipped.append(
                f"{gname}: pre-activation at {bad[0].pre_module or bad[0].pre_node} is not a "
                "Linear/Conv output with a bias"
            )
            continue
        goal_mean: list[Tensor] | None = None
        goal_std: list[Tensor] | None = None
        for wi, ep in zip(w, endpoints):
            mom = _moments(ep, spec, gname, data)
            if goal_mean is None or goal_std is None:
                goal_mean = [wi * m for m, _ in mom]
                goal_std = [wi * s for _, s in mom]
            else:
                goal_mean = [g + wi * m for g, (m, _) in zip(goal_mean, mom)]
                goal_std = [g + wi * s for g, (_, s) in zip(goal_std, mom)]
        assert goal_mean is not None and goal_std is not None
        now = _moments(merged, spec, gname, data)
        with torch.no_grad():
            for tap, module, (mu, sd), gm, gs in zip(taps, targets, now, goal_mean, goal_std):
                assert module is not None
                wt, bias = module.weight, module.bias
                assert isinstance(wt, Tensor) and isinstance(bias, Tensor)
                scale = (gs / (sd + eps)).to(wt.dtype)
                shift = (gm - mu * (gs / (sd + eps))).to(wt.dtype)
                sl = slice(tap.start, tap.start + tap.size)
                wt[sl] *= scale.view((-1,) + (1,) * (wt.dim() - 1))
                bias[sl] = bias[sl] * scale + shift
                report.corrected.append(f"{tap.pre_module}[{tap.start}:{tap.start + tap.size}]")
    return report
