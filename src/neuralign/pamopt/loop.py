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

1. **P-step** (:func:`~neuralign.pamopt.pstep.p_step`): each group's permutation is relaxed to a doubly stochastic
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
2. **Rounding** (:func:`~neuralign.pamopt.rounding.round_relaxed`): the Hungarian projection of each relaxed matrix,
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

import copy
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from neuralign.checks import check_compatible_models
from neuralign.curves.base import interpolated_keys
from neuralign.curves.bezier import Bezier
from neuralign.curves.train import train_curve
from neuralign.errors import ConfigError
from neuralign.pamopt.birkhoff import round_to_permutation
from neuralign.pamopt.config import INITS, PAMConfig
from neuralign.pamopt.objective import first_batches, line_fracs, pam_objective
from neuralign.pamopt.pstep import p_step, p_step_size, relaxed_distance, steps_per_epoch
from neuralign.pamopt.results import PAMResult, PAMStep, changed_fraction
from neuralign.pamopt.resume import PAMFolder
from neuralign.pamopt.rounding import round_relaxed
from neuralign.perm import (
    Permutation,
    PermutationSpec,
    apply_permutation,
    apply_soft_permutation,
    check_soft_supported,
    discover_spec,
)

__all__ = ["pam"]

logger = logging.getLogger(__name__)

State = dict[str, Tensor]
#: Below this relaxed distance from the start (largest over groups, see
#: :func:`~neuralign.pamopt.pstep.relaxed_distance`) the P-step counts as not having moved.
STILL = 0.05
Objective = Callable[[Mapping[str, Tensor], Sequence[Mapping[str, Tensor]]], float]


def _psi_of(
    curve: Bezier, theta1: Mapping[str, Tensor], ptheta2: Mapping[str, Tensor]
) -> list[State]:
    """The offsets :math:`\\psi_k` of ``curve``'s interior points from the line."""
    out: list[State] = []
    with torch.no_grad():
        for k, f in enumerate(line_fracs(curve.num_bends), start=1):
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
    bends: int,
    metadata: Mapping[str, Any],
) -> Bezier:
    """The Bezier curve θ₁ → P∘θ₂ whose interior points are the line's plus ``psi``."""
    curve = Bezier.from_states(model, theta1, ptheta2, bends, metadata=metadata)
    with torch.no_grad():
        for k, (f, offsets) in enumerate(zip(line_fracs(bends), psi, strict=True), 1):
            for i, key in enumerate(curve.interpolated_keys):
                curve._bend_tensor(k, i).copy_(
                    (1.0 - f) * theta1[key] + f * ptheta2[key] + offsets[key]
                )
    return curve


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _start_permutation(
    init: str | Permutation,
    spec: PermutationSpec,
    folder: PAMFolder,
    model_a: nn.Module,
    model_b: nn.Module,
    align_data: Any,
    seed: int,
) -> tuple[Permutation, str, float]:
    """PAM's starting permutation, its name and the seconds the alignment took."""
    if isinstance(init, Permutation):
        init.check(spec)
        return init, "given", 0.0
    if init not in INITS:
        raise ConfigError(f"unknown PAM init {init!r}; choose one of {', '.join(INITS)}")
    saved = folder.load_start()
    if saved is not None:
        return saved, init, 0.0
    if init == "identity":
        return Permutation.identity(spec), init, 0.0
    if align_data is None:
        raise ConfigError(
            "PAM init='correlation' needs align_data (a Dataset or batches of inputs)"
        )
    from neuralign.alignment.api import align

    t0 = time.perf_counter()
    res = align(model_a, model_b, align_data, method="correlation", spec=spec, seed=seed)
    return res.permutation, init, time.perf_counter() - t0


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

    See the module docstring for the algorithm (Tatro et al. 2020). Neither model
    is modified; every module's train/eval flag is restored.

    With ``checkpoint_dir`` the run is resumable at every P-step epoch, after every rounding
    and at every ψ-step epoch (:class:`~neuralign.pamopt.resume.PAMFolder`): a killed run
    started again on the same folder ends where an uninterrupted one does. The folder
    finally holds ``curve.safetensors`` (the Bezier curve between :math:`\\theta_1` and
    :math:`P\\circ\\theta_2`), ``permutation.json`` and ``pam.json``
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
        score_data: Fixed batches for the objective and for scoring rounding candidates,
            e.g. a loader over :func:`~neuralign.pamopt.scoring_subset` (default: the first
            ``config.score_batches`` batches of ``data``, epoch 0).
        device: Where to run (default: model A's device).
        progress: Show progress bars.
        checkpoint_dir: Folder to save progress in and resume from.
        metadata: Extra metadata stored with the curve.

    Returns:
        A :class:`PAMResult`.

    Raises:
        ConfigError: On bad settings or missing alignment data.
        CheckpointError: When ``checkpoint_dir`` holds a PAM run with other settings.
        PermutationError: When the spec has groups of a grouped convolution (no relaxed
            permutation exists for them; :func:`~neuralign.perm.check_soft_supported`).
    """
    check_compatible_models([model_a, model_b], what="pam")
    cfg = (config or PAMConfig()).validate()
    t_start = time.perf_counter()
    dev = torch.device(device) if device is not None else _model_device(model_a)
    arch = copy.deepcopy(model_a).to(dev)
    arch.requires_grad_(False)
    theta1 = {k: v.detach().to(dev) for k, v in model_a.state_dict().items()}
    theta2 = {k: v.detach().to(dev) for k, v in model_b.state_dict().items()}
    raw_scoring = first_batches(data, cfg.score_batches) if score_data is None else score_data
    score_batches = [(x.to(dev), y.to(dev)) for x, y in raw_scoring]
    if spec is None:
        spec = discover_spec(arch, score_batches[0][0][:2])
    check_compatible_models([theta1, theta2], spec=spec, what="pam")
    check_soft_supported(spec)  # grouped convolutions: no relaxed permutation

    folder = PAMFolder(checkpoint_dir)
    folder.claim(
        {
            # amp is a speed setting: a run may resume with it changed
            "config": {key: v for key, v in cfg.to_dict().items() if key != "amp"},
            "init": init if isinstance(init, str) else "given",
            "groups": spec.sizes,
        }
    )
    start, init_name, align_seconds = _start_permutation(
        init, spec, folder, model_a, model_b, align_data, cfg.seed
    )
    folder.save_start(start)
    timings = {"init": align_seconds, "p_step": 0.0, "rounding": 0.0, "psi_step": 0.0}

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
        done = folder.load_outer(k, arch)
        if done is not None:
            step, perm, loaded = done
            curve = loaded.to(dev)
            psi = _psi_of(curve, theta1, apply_permutation(theta2, spec, perm))
        else:
            step, perm, curve, psi = _outer_step(
                k, arch, theta1, theta2, spec, perm, psi, data, cfg, objective, folder,
                progress, meta,
            )  # fmt: skip
            folder.save_outer(k, step, perm)
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
    folder.finish(curve, perm, result.summary())
    return result


def _p_step_and_round(
    k: int,
    arch: nn.Module,
    theta1: Mapping[str, Tensor],
    theta2: Mapping[str, Tensor],
    spec: PermutationSpec,
    perm: Permutation,
    psi: list[State],
    data: Iterable[Any],
    cfg: PAMConfig,
    objective: Objective,
    folder: PAMFolder,
    progress: bool,
) -> tuple[Permutation, dict[str, Any], dict[str, float]]:
    """The P-step from ``perm`` and the rounding of its relaxed matrices."""
    seconds: dict[str, float] = {}
    before = objective(apply_permutation(theta2, spec, perm), psi)
    t0 = time.perf_counter()
    n_steps = steps_per_epoch(data)
    eta = p_step_size(cfg, n_steps)
    mats, p_hist = p_step(
        arch, theta1, theta2, spec, perm, psi, data, cfg,
        outer=k, checkpoint=folder.p_state(k), progress=progress, step_size=eta,
    )  # fmt: skip
    seconds["p_step"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    soft = apply_soft_permutation(theta2, spec, mats)
    relaxed = objective({key: v.detach() for key, v in soft.items()}, psi)
    hungarian = Permutation({g: round_to_permutation(m) for g, m in mats.items()})
    offset = {
        g: float(1.0 - m[torch.arange(m.shape[0]), hungarian.perms[g].to(m.device)].mean())
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
    fields = {
        "objective_before": before,
        "objective_relaxed": relaxed,
        "objective_after_p": after_p,
        "changed": changed_fraction(new_perm, perm),
        "relaxed_offset": offset,
        "candidates": scored,
        "chosen": chosen,
        "hungarian_changed": changed_fraction(hungarian, perm),
        "relaxed_distance": relaxed_distance(mats, perm),
        "step_size": eta,
        "total_step": eta * n_steps * cfg.p_epochs,
        "p_history": p_hist,
    }
    return new_perm, fields, seconds


def _report_p_step(k: int, fields: Mapping[str, Any], spec: PermutationSpec) -> None:
    """Log the P-step per group; warn when the relaxed matrices did not move."""
    logger.info(
        "PAM outer %d: P-step eta %.4g (sum %.3g), objective %.4f -> relaxed %.4f -> %.4f "
        "(kept %s)",
        k,
        fields.get("step_size", float("nan")),
        fields.get("total_step", float("nan")),
        fields["objective_before"],
        fields["objective_relaxed"],
        fields["objective_after_p"],
        fields["chosen"],
    )
    dist = fields.get("relaxed_distance", {})
    hung = fields.get("hungarian_changed", {})
    for g in spec.groups:
        logger.info(
            "PAM outer %d group %s: |P-P0| %.4f, Hungarian changed %.1f%%, kept changed %.1f%%",
            k,
            g,
            dist.get(g, float("nan")),
            100 * hung.get(g, float("nan")),
            100 * fields["changed"].get(g, float("nan")),
        )
    moved = max(dist.values(), default=0.0)
    if dist and moved < STILL:
        logger.warning(
            "PAM outer %d: the relaxed matrices did not move (largest |P-P0| %.2g < %.2g of "
            "the largest possible distance): the P-step's total step (sum eta = %.3g) is too "
            "small for this run; raise pam.p_budget or set p_lr",
            k,
            moved,
            STILL,
            fields.get("total_step", float("nan")),
        )
    elif hung and not any(hung.values()):
        logger.info(
            "PAM outer %d: the relaxed matrices moved (largest |P-P0| %.2g) but their "
            "Hungarian projection is the start in every group",
            k,
            moved,
        )


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
    objective: Objective,
    folder: PAMFolder,
    progress: bool,
    meta: Mapping[str, Any],
) -> tuple[PAMStep, Permutation, Bezier, list[State]]:
    """One outer iteration: P-step, rounding, ψ-step (each resumable in ``folder``)."""
    saved = folder.load_rounding(k)
    if saved is not None:
        new_perm, fields, seconds = saved
    else:
        new_perm, fields, seconds = _p_step_and_round(
            k, arch, theta1, theta2, spec, perm, psi, data, cfg, objective, folder, progress
        )
        folder.save_rounding(k, new_perm, fields, seconds)
    _report_p_step(k, fields, spec)

    # ---- ψ-step: the curve between θ₁ and P∘θ₂, control points ½θ₁ + ½P∘θ₂ + ψ
    ptheta2 = apply_permutation(theta2, spec, new_perm)
    curve = _curve_with_psi(arch, theta1, ptheta2, psi, cfg.bends, meta)
    t0 = time.perf_counter()
    psi_dir = folder.psi_dir(k)
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
    step = PAMStep(
        outer=k,
        objective_after_psi=objective(ptheta2, new_psi),
        psi_history=res.history,
        seconds=seconds,
        **fields,
    )
    return step, new_perm, curve, new_psi
