"""The P-step: projected proximal SGD on doubly stochastic relaxations of :math:`P`.

See ``docs/method.md`` (PAM, the P-step) and Tatro et al. 2020.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign import distributed as dist_
from neuralign.curves.base import functional_forward, interpolated_keys
from neuralign.errors import CheckpointError, ConfigError
from neuralign.models.common import split_logits
from neuralign.optim.runner import amp_autocast, run_epochs
from neuralign.pamopt.birkhoff import project_doubly_stochastic
from neuralign.pamopt.config import PAMConfig
from neuralign.pamopt.objective import curve_point, full_state
from neuralign.perm import Permutation, PermutationSpec, apply_soft_permutation

__all__ = ["one_hot", "p_step", "p_step_size", "relaxed_distance", "steps_per_epoch"]

_FORMAT = "neuralign.pam_p_step"


def one_hot(perm: Tensor, device: torch.device) -> Tensor:
    """The permutation matrix :math:`M` with :math:`M_{i, perm[i]} = 1`."""
    n = perm.numel()
    m = torch.zeros(n, n, device=device)
    m[torch.arange(n, device=device), perm.to(device)] = 1.0
    return m


def steps_per_epoch(data: Iterable[Any]) -> int:
    """Minibatches per epoch of ``data`` (``len(data)`` when it has one, else counted)."""
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        if hasattr(data, "set_epoch"):
            data.set_epoch(0)
        n = sum(1 for _ in data)
    if n <= 0:
        raise ConfigError("PAM P-step: the training data yielded no batch")
    return int(n)


def p_step_size(config: PAMConfig, steps: int) -> float:
    """The P-step's :math:`\\eta` for ``steps`` minibatch steps per epoch.

    ``config.p_lr`` when set; otherwise the larger of the paper's step (half the curve
    learning rate) and ``config.p_budget / (p_epochs * steps)``: a short run takes larger
    steps so that the total step :math:`\\sum\\eta` reaches the paper's (``docs/pam.md``).
    """
    if config.p_lr > 0:
        return config.p_lr
    total = max(1, config.p_epochs * steps)
    return max(config.curve.lr / 2, config.p_budget / total)


def _project_all(mats: dict[str, Tensor], method: str) -> dict[str, Tensor]:
    """Project every group's matrix, batching groups of equal size."""
    by_size: dict[int, list[str]] = {}
    for g, m in mats.items():
        by_size.setdefault(m.shape[0], []).append(g)
    out: dict[str, Tensor] = {}
    for names in by_size.values():
        proj = project_doubly_stochastic(torch.stack([mats[g] for g in names]), method)
        for g, p in zip(names, proj, strict=True):
            out[g] = p
    return out


def p_step(
    model: nn.Module,
    theta1: Mapping[str, Tensor],
    theta2: Mapping[str, Tensor],
    spec: PermutationSpec,
    start: Permutation,
    psi: Sequence[Mapping[str, Tensor]],
    data: Iterable[Any],
    config: PAMConfig,
    *,
    outer: int = 0,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    step_size: float | None = None,
) -> tuple[dict[str, Tensor], list[dict[str, float]]]:
    """One P-step: projected proximal SGD on doubly stochastic relaxations of :math:`P`.

    Per minibatch, with :math:`t \\sim U[0, 1)` from a generator seeded with
    ``config.seed + outer``:

    .. math:: Z = P - \\eta\\,\\nabla_P\\,\\mathrm{CE}\\big(\\varphi_{P,\\psi}(t)\\big),\\qquad
        P \\leftarrow \\Pi_{\\mathcal{B}}\\Big(\\frac{Z + (\\eta/\\nu)P^k}{1 + \\eta/\\nu}\\Big),

    where :math:`P^k` = ``start`` (the P-step's starting point: the minimiser of
    :math:`\\tfrac12\\lVert P - Z\\rVert^2 + \\tfrac{\\eta}{2\\nu}\\lVert P - P^k\\rVert^2` is the
    weighted mean above) and :math:`\\Pi_{\\mathcal{B}}` is ``config.projection``.

    Args:
        model: The architecture (its tensors are never used or changed).
        theta1: Endpoint A's state dict (on the training device).
        theta2: Endpoint B's *unpermuted* state dict.
        spec: The permutation spec.
        start: :math:`P^k`, where the relaxation starts.
        psi: The fixed curve offsets :math:`\\psi_k`.
        data: Training batches ``(x, y)``; ``set_epoch(e)`` is called when available.
        config: Step size, ν, projection, epochs, loss weights.
        outer: Outer iteration index (seeds the ``t`` generator).
        checkpoint: A file to save the relaxation after every epoch and to resume from.
        progress: Show a progress bar.
        step_size: :math:`\\eta`; default :func:`p_step_size` for ``data``'s epoch length.

    Returns:
        The relaxed doubly stochastic matrices by group, and a per-epoch history
        (``epoch``, ``loss``, ``lr`` = :math:`\\eta`, ``time``).
    """
    dev = next(iter(theta1.values())).device
    eta = step_size if step_size is not None else p_step_size(config, steps_per_epoch(data))
    pull = eta / config.nu
    anchor = {g: one_hot(p, dev) for g, p in start.perms.items()}
    mats = {g: m.clone() for g, m in anchor.items()}
    velocity = {g: torch.zeros_like(m) for g, m in mats.items()}
    generator = torch.Generator().manual_seed(config.seed + outer)
    keys = interpolated_keys(model)
    names = list(mats)
    use_amp = config.amp and dev.type == "cuda"
    autocast = amp_autocast(dev, config.amp)
    aux_weight = config.curve.aux_weight

    def train_epoch(epoch: int) -> dict[str, float]:
        t0 = time.perf_counter()
        model.train()
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        sums = torch.zeros(2, dtype=torch.float64, device=dev)  # CE sum, count
        for x, y in data:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if use_amp and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            t = float(torch.rand((), generator=generator))
            leaves = {g: mats[g].detach().requires_grad_(True) for g in names}
            soft = apply_soft_permutation(theta2, spec, leaves)
            interp = curve_point(theta1, soft, psi, keys, t)
            state = full_state(model, theta1, interp)
            with autocast():
                out = functional_forward(model, state, x)
            logits, aux = split_logits(out)
            ce = F.cross_entropy(logits.float(), y)
            loss = ce
            for a in aux:
                loss = loss + aux_weight * F.cross_entropy(a.float(), y)
            if config.p_weight_decay:
                l2 = torch.stack([interp[k].pow(2).sum() for k in keys]).sum()
                loss = loss + 0.5 * config.p_weight_decay * l2
            with torch.no_grad():
                sums[0] += ce.detach().double() * y.shape[0]
                sums[1] += y.shape[0]
            if not loss.requires_grad:  # t == 0 exactly: P plays no part
                continue
            grads = dist_.average_(torch.autograd.grad(loss, [leaves[g] for g in names]))
            with torch.no_grad():
                stepped: dict[str, Tensor] = {}
                for g, grad in zip(names, grads, strict=True):
                    if config.p_momentum:
                        velocity[g] = config.p_momentum * velocity[g] + grad
                        grad = velocity[g]
                    z = mats[g] - eta * grad
                    stepped[g] = (z + pull * anchor[g]) / (1.0 + pull)
                mats.update(_project_all(stepped, config.projection))
        if dist_.is_distributed():
            dist_.all_reduce_(sums)
        loss_sum, n_seen = sums.tolist()
        if n_seen == 0:
            raise ConfigError("PAM P-step: the training data yielded no batch")
        return {
            "epoch": float(epoch + 1),
            "loss": loss_sum / n_seen,
            "lr": eta,
            "time": time.perf_counter() - t0,
        }

    def save_state(done: int, history: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "epoch": done,
            "mats": {g: m.detach().cpu() for g, m in mats.items()},
            "velocity": {g: v.detach().cpu() for g, v in velocity.items()},
            "generator": generator.get_state(),
            "history": history,
        }

    def load_state(payload: dict[str, Any]) -> tuple[int, list[dict[str, float]]]:
        if set(payload.get("mats", {})) != set(mats):
            raise CheckpointError(f"{checkpoint}: P-step checkpoint of another spec")
        mats.update({g: m.to(dev) for g, m in payload["mats"].items()})
        velocity.update({g: v.to(dev) for g, v in payload["velocity"].items()})
        generator.set_state(payload["generator"])
        return int(payload["epoch"]), list(payload["history"])

    run = run_epochs(
        train_epoch,
        config.p_epochs,
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        save_state=save_state,
        load_state=load_state,
        modules=[model],
        desc=f"PAM P-step {outer}",
        progress=progress,
        postfix=lambda r: {"loss": f"{r['loss']:.3f}"},
        state=lambda: mats,
    )
    return {g: m.detach() for g, m in mats.items()}, run.history


def relaxed_distance(mats: Mapping[str, Tensor], start: Permutation) -> dict[str, float]:
    """Per group, :math:`\\lVert P - P_0\\rVert_F / \\sqrt{2n}`: 0 at the start, 1 when
    every unit's mass moved to another (the largest distance between two permutations)."""
    out: dict[str, float] = {}
    for g, m in mats.items():
        n = m.shape[0]
        diff = m - one_hot(start.perms[g], m.device)
        out[g] = float(torch.linalg.matrix_norm(diff)) / math.sqrt(2 * n)
    return out
