"""PAM: proximal alternating minimisation over permutations and the curve.

Tatro et al. (2020), "Optimizing Mode Connectivity via Neuron Alignment", §4, ask whether
the alignment permutation is a good one *for the curve*: they minimise, jointly over the
permutation :math:`P` of model B's hidden units and the curve,

.. math:: F(P, \\psi) = \\mathbb{E}_{t \\sim U[0, 1]}\\,
    \\mathcal{L}\\big(\\varphi_{P,\\psi}(t)\\big),

with the curve's control point re-parametrised so that it moves with :math:`P`:

.. math:: \\theta_{mid} = \\tfrac12\\theta_1 + \\tfrac12 P\\circ\\theta_2 + \\psi, \\qquad
    \\varphi(t) = (1-t)^2\\theta_1 + 2t(1-t)\\theta_{mid} + t^2 P\\circ\\theta_2
    = (1-t)\\theta_1 + t\\,P\\circ\\theta_2 + 2t(1-t)\\,\\psi.

(For a Bezier curve of ``n`` bends, interior point :math:`k` is
:math:`(1-\\tfrac{k}{n-1})\\theta_1 + \\tfrac{k}{n-1}P\\circ\\theta_2 + \\psi_k` and, by the
linear precision of the Bernstein basis, :math:`\\varphi(t) = (1-t)\\theta_1 + tP\\circ\\theta_2 +
\\sum_k b_k(t)\\psi_k`.) Here :math:`P` is one permutation per group of the discovered
:class:`~neuralign.perm.PermutationSpec`, so PAM runs on every architecture the spec supports
(MLPs, TinyTen, ResNets, VGG, GoogLeNet), not only the paper's three. One *outer iteration*
:math:`k` alternates

1. **P-step** (:func:`p_step`): each group's permutation is relaxed to a doubly stochastic
   matrix, initialised at :math:`P^k`; per minibatch a :math:`t \\sim U[0, 1)` is drawn, the
   cross-entropy of :math:`\\varphi(t)` (with :math:`P` applied as matrices by
   :func:`~neuralign.perm.apply_soft_permutation`) is back-propagated to the matrices, and a
   proximal gradient step is taken on
   :math:`F(P, \\psi^k) + \\tfrac{1}{2\\nu}\\lVert P - P^k\\rVert_F^2`: a gradient step
   :math:`Z = P - \\eta\\nabla_P F`, the closed-form proximal pull
   :math:`Z \\leftarrow (Z + \\tfrac{\\eta}{\\nu}P^k)/(1 + \\tfrac{\\eta}{\\nu})` toward the
   step's starting point, and the Euclidean projection onto the Birkhoff polytope
   (:func:`~neuralign.pamopt.birkhoff.project_doubly_stochastic`). :math:`\\psi` is fixed;
   BatchNorm uses batch statistics through a functional call (module buffers are never
   touched).
2. **Rounding** (:func:`round_relaxed`): the Hungarian projection of each relaxed matrix,
   optionally permutations sampled from its Birkhoff–von Neumann decomposition, and the
   previous permutation are scored by the objective on a fixed training subset (mean loss
   over a few fixed :math:`t`); the best one is kept, so rounding never makes the objective
   worse.
3. **ψ-step**: the curve is trained with :math:`P` fixed by
   :func:`~neuralign.curves.train_curve` (resumable), starting from
   :math:`\\theta_{mid} = \\tfrac12\\theta_1 + \\tfrac12P^{k+1}\\circ\\theta_2 + \\psi^k`, i.e. the
   trained :math:`\\psi` is kept when :math:`P` changes.

"PAM Unaligned" starts from the identity, "PAM Aligned" from the activation-correlation
alignment; the paper runs one outer iteration (20 P-step epochs, 250 curve epochs) and finds
that PAM Aligned ≈ Aligned — the alignment is (near) locally optimal. :class:`PAMResult`
records the evidence: the fraction of units per group whose assignment PAM changed and the
objective before and after each step.

Example:
    >>> res = pam(model_a, model_b, loader, PAMConfig(p_epochs=20),
    ...           init="correlation", align_data=align_subset)  # doctest: +SKIP
    >>> res.changed_fraction, res.objective_log  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from neuralign import distributed as dist_
from neuralign.checks import check_finite_loss, check_finite_state
from neuralign.curves.base import functional_forward, interpolated_keys
from neuralign.curves.bezier import Bezier, bernstein
from neuralign.curves.train import train_curve
from neuralign.errors import CheckpointError, ConfigError
from neuralign.io.atomic import atomic_path, atomic_write_text
from neuralign.models.common import split_logits
from neuralign.pamopt.birkhoff import (
    birkhoff_decomposition,
    project_doubly_stochastic,
    round_to_permutation,
)
from neuralign.pamopt.config import INITS, PAMConfig
from neuralign.perm import (
    Permutation,
    PermutationSpec,
    apply_permutation,
    apply_soft_permutation,
    discover_spec,
)

__all__ = [
    "INITS",
    "PAMConfig",
    "PAMResult",
    "PAMStep",
    "changed_fraction",
    "p_step",
    "pam",
    "pam_objective",
    "round_relaxed",
]

logger = logging.getLogger(__name__)

State = dict[str, Tensor]
_FORMAT = "neuralign.pam"


# --------------------------------------------------------------------------- results


@dataclass
class PAMStep:
    """What one outer iteration did.

    Attributes:
        outer: Index of the outer iteration (0-based).
        objective_before: :math:`F(P^k, \\psi^k)` before the P-step.
        objective_relaxed: :math:`F` at the relaxed (doubly stochastic) matrices after the
            P-step.
        objective_after_p: :math:`F(P^{k+1}, \\psi^k)` after rounding.
        objective_after_psi: :math:`F(P^{k+1}, \\psi^{k+1})` after the ψ-step.
        changed: Per group, the fraction of units whose assignment this step changed.
        relaxed_offset: Per group, :math:`1 - \\tfrac1n\\sum_i \\tilde P_{i\\pi(i)}` for the
            relaxed matrix :math:`\\tilde P` and its Hungarian projection :math:`\\pi`: how far
            the relaxation moved off a vertex (0 = it stayed a permutation).
        candidates: ``{"name", "objective"}`` of every scored rounding candidate.
        chosen: Name of the kept candidate (``"previous"``, ``"hungarian"``,
            ``"sample{j}"``).
        p_history: Per P-step epoch: ``epoch``, ``loss`` (mean CE), ``time``.
        psi_history: The ψ-step's :func:`~neuralign.curves.train_curve` history.
        seconds: Wall time of ``p_step``, ``rounding`` and ``psi_step``.
    """

    outer: int
    objective_before: float
    objective_relaxed: float
    objective_after_p: float
    objective_after_psi: float
    changed: dict[str, float]
    relaxed_offset: dict[str, float]
    candidates: list[dict[str, Any]]
    chosen: str
    p_history: list[dict[str, float]] = field(default_factory=list)
    psi_history: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class PAMResult:
    """Outcome of :func:`pam`.

    Attributes:
        permutation: The final permutation (applied to model B).
        start_permutation: Where PAM started (identity or the correlation alignment).
        curve: The trained Bezier curve between :math:`\\theta_1` and
            :math:`P\\circ\\theta_2`.
        aligned_b: Model B with ``permutation`` applied (same function as B).
        spec: The permutation spec.
        init: ``"identity"``, ``"correlation"`` or ``"given"``.
        changed_fraction: Per group, the fraction of units whose final assignment differs
            from the starting one (PAM's local-optimality evidence).
        objective_log: ``{"outer", "stage", "objective"}`` records: the objective (mean loss
            over ``objective_ts`` on the scoring subset) at ``start``, after the relaxed
            P-step (``p-relaxed``), after rounding (``p-step``) and after the ``psi-step``.
        steps: One :class:`PAMStep` per outer iteration.
        timings: Wall seconds: ``init`` (alignment), ``p_step``, ``rounding``, ``psi_step``,
            ``total`` (steps done before a resume count with their recorded times).
        config: The configuration used.
    """

    permutation: Permutation
    start_permutation: Permutation
    curve: Bezier
    aligned_b: nn.Module
    spec: PermutationSpec
    init: str
    changed_fraction: dict[str, float]
    objective_log: list[dict[str, Any]]
    steps: list[PAMStep]
    timings: dict[str, float]
    config: PAMConfig

    @property
    def changed_units(self) -> float:
        """Fraction of all units (over every group) whose assignment PAM changed."""
        sizes = self.spec.sizes
        total = sum(sizes[g] for g in self.changed_fraction)
        if total == 0:
            return 0.0
        return sum(self.changed_fraction[g] * sizes[g] for g in self.changed_fraction) / total

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (no tensors but the permutation's index lists)."""
        return {
            "format": _FORMAT,
            "init": self.init,
            "changed_fraction": self.changed_fraction,
            "changed_units": self.changed_units,
            "objective_log": self.objective_log,
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "timings": self.timings,
            "config": self.config.to_dict(),
            "permutation": {g: p.tolist() for g, p in self.permutation.perms.items()},
            "start_permutation": {g: p.tolist() for g, p in self.start_permutation.perms.items()},
        }


# --------------------------------------------------------------------------- helpers


def changed_fraction(new: Permutation, old: Permutation) -> dict[str, float]:
    """Per group, the fraction of positions ``i`` with ``new[i] != old[i]``."""
    return {g: float((p != old.perms[g]).double().mean()) for g, p in new.perms.items()}


def _one_hot(perm: Tensor, device: torch.device) -> Tensor:
    n = perm.numel()
    m = torch.zeros(n, n, device=device)
    m[torch.arange(n, device=device), perm.to(device)] = 1.0
    return m


def _line_fracs(num_bends: int) -> list[float]:
    return [k / (num_bends - 1) for k in range(1, num_bends - 1)]


def _curve_point(
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


def _full_state(
    model: nn.Module, theta1: Mapping[str, Tensor], interp: Mapping[str, Tensor]
) -> State:
    # Non-interpolated entries (BN running statistics) are fresh copies of θ₁'s: BatchNorm
    # updates them in place in train mode, and that must not leak anywhere.
    return {k: interp[k] if k in interp else theta1[k].clone() for k in model.state_dict()}


def _batches(data: Iterable[Any], n: int) -> list[tuple[Tensor, Tensor]]:
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


class _TrainMode:
    """Put a module in train mode and restore every submodule's flag afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = {m: m.training for m in model.modules()}

    def __enter__(self) -> nn.Module:
        self.model.train()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.modes.items():
            m.training = flag


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
    with torch.no_grad(), _TrainMode(model):
        for t in ts:
            interp = _curve_point(theta1, ptheta2, psi, keys, float(t))
            for x, y in batches:
                state = _full_state(model, theta1, interp)
                logits, _ = split_logits(functional_forward(model, state, x))
                sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
                sums[1] += y.shape[0]
    if reduce and dist_.is_distributed():
        dist_.all_reduce_(sums)
    total, count = sums.tolist()
    return total / max(count, 1.0)


# --------------------------------------------------------------------------- P-step


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
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = False,
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

    Returns:
        The relaxed doubly stochastic matrices by group, and a per-epoch history.
    """
    dev = next(iter(theta1.values())).device
    eta, nu = config.step_size, config.nu
    pull = eta / nu
    anchor = {g: _one_hot(p, dev) for g, p in start.perms.items()}
    mats = {g: m.clone() for g, m in anchor.items()}
    velocity = {g: torch.zeros_like(m) for g, m in mats.items()}
    generator = torch.Generator().manual_seed(config.seed + outer)
    history: list[dict[str, float]] = []
    first = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        payload = torch.load(ckpt, map_location="cpu", weights_only=True)
        if set(payload.get("mats", {})) != set(mats):
            raise CheckpointError(f"{ckpt}: P-step checkpoint of another spec")
        mats = {g: m.to(dev) for g, m in payload["mats"].items()}
        velocity = {g: v.to(dev) for g, v in payload["velocity"].items()}
        generator.set_state(payload["generator"])
        history = list(payload["history"])
        first = int(payload["epoch"])
    keys = interpolated_keys(model)
    names = list(mats)
    use_amp = config.amp and dev.type == "cuda"
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if use_amp
        else contextlib.nullcontext
    )
    with _TrainMode(model):
        bar = tqdm(
            range(first, config.p_epochs),
            total=config.p_epochs,
            initial=first,
            desc=f"PAM P-step {outer}",
            disable=not (progress and dist_.is_main()),
            unit="epoch",
        )
        for epoch in bar:
            t0 = time.perf_counter()
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
                interp = _curve_point(theta1, soft, psi, keys, t)
                state = _full_state(model, theta1, interp)
                with autocast():
                    out = functional_forward(model, state, x)
                logits, aux = split_logits(out)
                ce = F.cross_entropy(logits.float(), y)
                loss = ce
                for a in aux:
                    loss = loss + config.curve.aux_weight * F.cross_entropy(a.float(), y)
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
                    mats = _project_all(stepped, config.projection)
            if dist_.is_distributed():
                dist_.all_reduce_(sums)
            loss_sum, n_seen = sums.tolist()
            if n_seen == 0:
                raise ConfigError("PAM P-step: the training data yielded no batch")
            # a diverged P-step stops here, before its relaxed P is saved or rounded
            check_finite_loss(loss_sum / n_seen, f"PAM P-step (outer {outer})", epoch=epoch + 1)
            check_finite_state(mats, f"PAM P-step (outer {outer})", epoch=epoch + 1)
            record = {
                "epoch": float(epoch + 1),
                "loss": loss_sum / n_seen,
                "time": time.perf_counter() - t0,
            }
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            logger.info("PAM outer %d P-step epoch %d: %s", outer, epoch + 1, record)
            if ckpt is not None:
                payload = {
                    "format": "neuralign.pam_p_step",
                    "epoch": epoch + 1,
                    "mats": {g: m.detach().cpu() for g, m in mats.items()},
                    "velocity": {g: v.detach().cpu() for g, v in velocity.items()},
                    "generator": generator.get_state(),
                    "history": history,
                }
                dist_.on_main(lambda p=payload, c=ckpt: _save_torch(p, c))
        bar.close()
    return {g: m.detach() for g, m in mats.items()}, history


# --------------------------------------------------------------------------- rounding


def _perm_key(perm: Permutation) -> tuple[bytes, ...]:
    return tuple(p.numpy().tobytes() for p in perm.perms.values())


def round_relaxed(
    mats: Mapping[str, Tensor],
    previous: Permutation,
    score: Any,
    *,
    samples: int = 0,
    seed: int = 0,
) -> tuple[Permutation, str, list[dict[str, Any]]]:
    """Turn relaxed matrices into the best-scoring permutation among candidates.

    Candidates: ``previous`` (always, so the result never scores worse than it), the
    Hungarian projection of every group (:func:`round_to_permutation`), and ``samples``
    permutations drawn per group from the Birkhoff–von Neumann decomposition
    :math:`\\tilde P \\approx \\sum_j w_j P_{\\sigma_j}` with probabilities :math:`\\propto w_j`
    (``torch.Generator`` seeded with ``seed``). Duplicates are scored once; ties keep the
    earlier candidate (previous, then Hungarian).

    Args:
        mats: Relaxed matrices by group.
        previous: The permutation before the P-step.
        score: ``score(perm) -> float``, lower is better.
        samples: Number of sampled candidates.
        seed: Seed of the sampling.

    Returns:
        ``(best permutation, its name, [{"name", "objective"}, ...])``.
    """
    candidates: list[tuple[str, Permutation]] = [
        ("previous", previous),
        ("hungarian", Permutation({g: round_to_permutation(m) for g, m in mats.items()})),
    ]
    if samples:
        gen = torch.Generator().manual_seed(seed)
        decomps: dict[str, tuple[Tensor, list[Tensor]]] = {}
        for g, m in mats.items():
            n = m.shape[0]
            terms = birkhoff_decomposition(m, max_terms=4 * n, tol=1e-7)
            if not terms:
                terms_perms = [round_to_permutation(m)]
                weights = torch.ones(1, dtype=torch.float64)
            else:
                terms_perms = [term.perm for term in terms]
                weights = torch.tensor([term.weight for term in terms], dtype=torch.float64)
            decomps[g] = (weights, terms_perms)
        for j in range(samples):
            perms: dict[str, Tensor] = {}
            for g, (weights, terms_perms) in decomps.items():
                idx = int(torch.multinomial(weights, 1, generator=gen))
                perms[g] = terms_perms[idx]
            candidates.append((f"sample{j}", Permutation(perms)))
    seen: dict[tuple[bytes, ...], float] = {}
    scored: list[dict[str, Any]] = []
    best: tuple[float, str, Permutation] | None = None
    for name, perm in candidates:
        key = _perm_key(perm)
        if key in seen:
            continue
        value = float(score(perm))
        seen[key] = value
        scored.append({"name": name, "objective": value})
        if best is None or value < best[0]:
            best = (value, name, perm)
    assert best is not None
    return best[2], best[1], scored


# --------------------------------------------------------------------------- driver


def _psi_of(
    curve: Bezier, theta1: Mapping[str, Tensor], ptheta2: Mapping[str, Tensor]
) -> list[State]:
    fracs = _line_fracs(curve.num_bends)
    out: list[State] = []
    with torch.no_grad():
        for k, f in enumerate(fracs, start=1):
            out.append(
                {
                    key: curve._bend_tensor(k, i).detach()
                    - ((1.0 - f) * theta1[key] + f * ptheta2[key])
                    for i, key in enumerate(curve.interpolated_keys)
                }
            )
    return out


def _curve_with_psi(
    model: nn.Module,
    theta1: Mapping[str, Tensor],
    ptheta2: Mapping[str, Tensor],
    psi: Sequence[Mapping[str, Tensor]],
    num_bends: int,
    metadata: Mapping[str, Any],
) -> Bezier:
    curve = Bezier.from_states(model, theta1, ptheta2, num_bends, metadata=metadata)
    with torch.no_grad():
        for k, (f, offsets) in enumerate(zip(_line_fracs(num_bends), psi, strict=True), 1):
            for i, key in enumerate(curve.interpolated_keys):
                curve._bend_tensor(k, i).copy_(
                    (1.0 - f) * theta1[key] + f * ptheta2[key] + offsets[key]
                )
    return curve


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _perm_from_json(d: Mapping[str, Any]) -> Permutation:
    return Permutation({g: torch.tensor(v) for g, v in d.items()})


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically on rank 0 (others wait at a barrier)."""
    dist_.on_main(lambda: atomic_write_text(path, json.dumps(obj, indent=1) + "\n"))


def _save_torch(payload: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def pam(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Iterable[Any],
    config: PAMConfig | None = None,
    *,
    init: str | Permutation = "identity",
    spec: PermutationSpec | None = None,
    align_data: Any = None,
    score_data: Iterable[Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> PAMResult:
    """Jointly optimise the permutation of ``model_b`` and the curve to ``model_a`` (PAM).

    See the module docstring for the algorithm (Tatro et al. 2020, §4). Neither model is
    modified; every module's train/eval flag is restored.

    With ``checkpoint_dir`` the run is resumable at every P-step epoch, after every rounding
    and at every ψ-step epoch (through :func:`~neuralign.curves.train_curve`'s checkpoint):
    a killed run started again on the same folder ends where an uninterrupted one does.
    The folder finally holds ``curve.safetensors`` (the Bezier curve between
    :math:`\\theta_1` and :math:`P\\circ\\theta_2`), ``permutation.json`` and ``pam.json``
    (:meth:`PAMResult.summary`).

    Args:
        model_a: :math:`\\theta_1`, the reference (never permuted).
        model_b: :math:`\\theta_2`, whose hidden units are permuted.
        data: Training batches ``(x, y)`` for the P-step and the ψ-step (e.g. a shuffled,
            augmented :class:`~neuralign.data.TensorLoader`).
        config: :class:`PAMConfig` (default: the paper's settings).
        init: ``"identity"`` (PAM Unaligned), ``"correlation"`` (PAM Aligned: the
            activation-correlation alignment of :func:`~neuralign.alignment.align` on
            ``align_data``), or a :class:`~neuralign.perm.Permutation`.
        spec: The permutation spec; discovered from a batch of ``data`` when ``None``.
        align_data: Alignment data for ``init="correlation"`` (a Dataset — its
            class-balanced 20% is used — or batches).
        score_data: Fixed batches for the objective and for scoring rounding candidates
            (default: the first ``config.score_batches`` batches of ``data``, epoch 0).
        device: Where to run (default: model A's device).
        progress: Show progress bars.
        checkpoint_dir: Folder to save progress in and resume from.
        metadata: Extra metadata stored with the curve.

    Returns:
        A :class:`PAMResult`.

    Raises:
        ConfigError: On bad settings or missing alignment data.
        CheckpointError: When ``checkpoint_dir`` holds a PAM run with other settings.
    """
    from neuralign.checks import check_compatible_models

    check_compatible_models([model_a, model_b], what="pam")
    cfg = (config or PAMConfig()).validate()
    t_start = time.perf_counter()
    dev = torch.device(device) if device is not None else _model_device(model_a)
    arch = copy.deepcopy(model_a).to(dev)
    arch.requires_grad_(False)
    theta1 = {k: v.detach().to(dev) for k, v in model_a.state_dict().items()}
    theta2 = {k: v.detach().to(dev) for k, v in model_b.state_dict().items()}
    score_batches = [
        (x.to(dev), y.to(dev))
        for x, y in (_batches(data, cfg.score_batches) if score_data is None else list(score_data))
    ]
    if spec is None:
        spec = discover_spec(arch, score_batches[0][0][:2])
    check_compatible_models([theta1, theta2], spec=spec, what="pam")

    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = {
        # amp is a speed setting: a run may resume with it changed
        "config": {key: v for key, v in cfg.to_dict().items() if key != "amp"},
        "init": init if isinstance(init, str) else "given",
        "groups": spec.sizes,
    }
    timings = {"init": 0.0, "p_step": 0.0, "rounding": 0.0, "psi_step": 0.0}
    if ckdir is not None:
        ckdir.mkdir(parents=True, exist_ok=True)
        run_file = ckdir / "pam_run.json"
        if run_file.exists():
            old = json.loads(run_file.read_text())
            if old != fingerprint:
                raise CheckpointError(
                    f"{ckdir} holds a PAM run with other settings; use another folder or delete it"
                )
        else:
            _write_json(run_file, fingerprint)

    # ---- starting permutation
    start_file = ckdir / "start_permutation.json" if ckdir is not None else None
    if isinstance(init, Permutation):
        init.check(spec)
        start, init_name = init, "given"
    elif init not in INITS:
        raise ConfigError(f"unknown PAM init {init!r}; choose one of {', '.join(INITS)}")
    elif start_file is not None and start_file.exists():
        start, init_name = Permutation.load(start_file), init
    elif init == "identity":
        start, init_name = Permutation.identity(spec), init
    else:
        if align_data is None:
            raise ConfigError(
                "PAM init='correlation' needs align_data (a Dataset or batches of inputs)"
            )
        from neuralign.alignment.api import align

        t0 = time.perf_counter()
        res = align(model_a, model_b, align_data, method="correlation", spec=spec, seed=cfg.seed)
        start, init_name = res.permutation, init
        timings["init"] = time.perf_counter() - t0
    if start_file is not None and not start_file.exists():
        dist_.on_main(lambda: start.save(start_file))

    meta = {"method": "pam", "init": init_name, **dict(metadata or {})}
    perm = start
    psi: list[State] = [
        {k: torch.zeros_like(theta1[k]) for k in interpolated_keys(arch)}
        for _ in range(cfg.bends - 2)
    ]
    steps: list[PAMStep] = []
    log: list[dict[str, Any]] = []
    curve: Bezier | None = None

    def objective(p2: Mapping[str, Tensor], offsets: Sequence[Mapping[str, Tensor]]) -> float:
        return pam_objective(arch, theta1, p2, offsets, score_batches, cfg.objective_ts)

    for k in range(cfg.outer_iterations):
        odir = ckdir / f"outer{k}" if ckdir is not None else None
        done_file = odir / "done.json" if odir is not None else None
        if done_file is not None and done_file.exists():
            rec = json.loads(done_file.read_text())
            step = PAMStep(**rec["step"])
            perm = _perm_from_json(rec["permutation"])
            assert odir is not None
            ptheta2 = apply_permutation(theta2, spec, perm)
            loaded = Bezier.load(odir / "psi" / "curve.safetensors", arch)
            assert isinstance(loaded, Bezier)
            curve = loaded.to(dev)
            psi = _psi_of(curve, theta1, ptheta2)
        else:
            if odir is not None:
                odir.mkdir(parents=True, exist_ok=True)
            step, perm, curve, psi = _outer_step(
                k,
                arch,
                theta1,
                theta2,
                spec,
                perm,
                psi,
                data,
                cfg,
                objective,
                odir,
                progress,
                meta,
            )
            if done_file is not None:
                _write_json(
                    done_file,
                    {
                        "step": dataclasses.asdict(step),
                        "permutation": {g: p.tolist() for g, p in perm.perms.items()},
                    },
                )
        steps.append(step)
        log += [
            {"outer": k, "stage": "start", "objective": step.objective_before},
            {"outer": k, "stage": "p-relaxed", "objective": step.objective_relaxed},
            {"outer": k, "stage": "p-step", "objective": step.objective_after_p},
            {"outer": k, "stage": "psi-step", "objective": step.objective_after_psi},
        ]
        for name in ("p_step", "rounding", "psi_step"):
            timings[name] += step.seconds.get(name, 0.0)
    assert curve is not None
    timings["total"] = time.perf_counter() - t_start
    aligned_b = copy.deepcopy(model_b)
    aligned_b.load_state_dict(apply_permutation(model_b.state_dict(), spec, perm))
    result = PAMResult(
        permutation=perm,
        start_permutation=start,
        curve=curve,
        aligned_b=aligned_b,
        spec=spec,
        init=init_name,
        changed_fraction=changed_fraction(perm, start),
        objective_log=log,
        steps=steps,
        timings=timings,
        config=cfg,
    )
    if ckdir is not None:
        final_curve, final_perm = curve, perm
        dist_.on_main(lambda: final_curve.save(ckdir / "curve.safetensors"))
        dist_.on_main(lambda: final_perm.save(ckdir / "permutation.json"))
        _write_json(ckdir / "pam.json", result.summary())
    return result


def _outer_step(
    k: int,
    arch: nn.Module,
    theta1: Mapping[str, Tensor],
    theta2: Mapping[str, Tensor],
    spec: PermutationSpec,
    perm: Permutation,
    psi: list[State],
    data: Iterable[Any],
    cfg: PAMConfig,
    objective: Any,
    odir: Path | None,
    progress: bool,
    meta: Mapping[str, Any],
) -> tuple[PAMStep, Permutation, Bezier, list[State]]:
    """One outer iteration: P-step, rounding, ψ-step (each resumable under ``odir``)."""
    round_file = odir / "p_step.json" if odir is not None else None
    seconds: dict[str, float] = {}
    if round_file is not None and round_file.exists():
        rec = json.loads(round_file.read_text())
        new_perm = _perm_from_json(rec["permutation"])
        fields_p = rec["fields"]
        seconds.update(rec["seconds"])
    else:
        before = objective(apply_permutation(theta2, spec, perm), psi)
        t0 = time.perf_counter()
        mats, p_hist = p_step(
            arch,
            theta1,
            theta2,
            spec,
            perm,
            psi,
            data,
            cfg,
            outer=k,
            checkpoint=odir / "p_step_state.pt" if odir is not None else None,
            progress=progress,
        )
        seconds["p_step"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        relaxed = objective(
            {key: v.detach() for key, v in apply_soft_permutation(theta2, spec, mats).items()},
            psi,
        )
        hungarian = {g: round_to_permutation(m) for g, m in mats.items()}
        offset = {
            g: float(1.0 - m[torch.arange(m.shape[0]), hungarian[g].to(m.device)].mean())
            for g, m in mats.items()
        }
        new_perm, chosen, scored = round_relaxed(
            mats,
            perm,
            lambda p: objective(apply_permutation(theta2, spec, p), psi),
            samples=cfg.round_samples,
            seed=cfg.seed + k,
        )
        after_p = next(c["objective"] for c in scored if c["name"] == chosen)
        seconds["rounding"] = time.perf_counter() - t0
        fields_p = {
            "objective_before": before,
            "objective_relaxed": relaxed,
            "objective_after_p": after_p,
            "changed": changed_fraction(new_perm, perm),
            "relaxed_offset": offset,
            "candidates": scored,
            "chosen": chosen,
            "p_history": p_hist,
        }
        if round_file is not None:
            _write_json(
                round_file,
                {
                    "permutation": {g: p.tolist() for g, p in new_perm.perms.items()},
                    "fields": fields_p,
                    "seconds": seconds,
                },
            )
    logger.info(
        "PAM outer %d: P-step kept %s, objective %.4f -> %.4f",
        k,
        fields_p["chosen"],
        fields_p["objective_before"],
        fields_p["objective_after_p"],
    )

    # ---- ψ-step: the curve between θ₁ and P∘θ₂, control points ½θ₁ + ½P∘θ₂ + ψ
    ptheta2 = apply_permutation(theta2, spec, new_perm)
    curve = _curve_with_psi(arch, theta1, ptheta2, psi, cfg.bends, meta)
    t0 = time.perf_counter()
    psi_dir = odir / "psi" if odir is not None else None
    res = train_curve(
        curve,
        data,
        cfg.curve,
        progress=progress,
        log_path=psi_dir / "history.jsonl" if psi_dir is not None else None,
        checkpoint_dir=psi_dir,
        seed=cfg.seed + k,
        amp=cfg.amp,
    )
    seconds["psi_step"] = seconds.get("psi_step", 0.0) + time.perf_counter() - t0
    new_psi = _psi_of(curve, theta1, ptheta2)
    after_psi = objective(ptheta2, new_psi)
    step = PAMStep(
        outer=k,
        objective_after_psi=after_psi,
        psi_history=res.history,
        seconds=seconds,
        **fields_p,
    )
    return step, new_perm, curve, new_psi
