"""Training the interior control points of a curve (Garipov et al. 2018, Sec. 3).

The objective is the expected loss along the curve under the uniform distribution on
``[0, 1]``, with the L2 penalty on the *point of the curve*:

.. math::

    \\min_{\\theta^{(1)}, \\dots, \\theta^{(n-2)}}\\;
    \\mathbb{E}_{t \\sim U[0, 1]}\\Big[\\mathcal{L}\\big(\\varphi(t)\\big)
    + \\tfrac{\\lambda}{2}\\lVert \\varphi(t) \\rVert^2\\Big],

estimated with one ``t`` per minibatch (Garipov et al. 2018, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs"; Tatro et al. 2020, "Optimizing Mode Connectivity
via Neuron Alignment", Sec. 3). BatchNorm layers use batch statistics.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign import distributed as dist_
from neuralign.curves.base import Curve, functional_forward
from neuralign.curves.config import CurveTrainConfig
from neuralign.data.loader import TensorLoader
from neuralign.errors import CheckpointError, ConfigError
from neuralign.io.atomic import atomic_write_text
from neuralign.models.common import split_logits
from neuralign.optim.runner import amp_autocast, get_rng_state, run_epochs, set_rng_state
from neuralign.optim.schedules import set_epoch_lr

__all__ = [
    "CurveAttack",
    "CurveEvaluator",
    "CurveTrainConfig",
    "CurveTrainResult",
    "train_curve",
]

#: ``attack(model, state, x, y) -> x_adv``: crafts inputs against the point φ(t) (robust curves).
CurveAttack = Callable[[nn.Module, Mapping[str, Tensor], Tensor, Tensor], Tensor]
#: ``evaluate(curve) -> metrics``: in-training evaluation merged into each epoch's record.
CurveEvaluator = Callable[[Curve], Mapping[str, float]]

logger = logging.getLogger(__name__)

_CHECKPOINT_NAME = "curve_train_state.pt"
_CURVE_NAME = "curve.safetensors"
_FORMAT = "neuralign.curve_train"


@dataclass
class CurveTrainResult:
    """Outcome of :func:`train_curve`.

    Attributes:
        history: One dict per completed epoch (including epochs done before a resume):
            ``epoch`` (1-based), ``loss`` (mean cross-entropy of the main head), ``objective``
            (mean full objective incl. aux heads and the L2 term), ``acc`` (training accuracy
            in %, at the sampled ``t``), ``lr``, ``time`` (seconds), and ``test_loss`` /
            ``test_acc`` at ``t = test_t`` when test data were given.
        resumed_from: Number of epochs found in the checkpoint when resuming, else ``None``.
        checkpoint_path: The training checkpoint, when ``checkpoint_dir`` was given.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    checkpoint_path: Path | None = None

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's record (empty when no epoch ran)."""
        return self.history[-1] if self.history else {}


def _curve_device(curve: Curve) -> torch.device:
    for t in curve.buffers():
        return t.device
    return torch.device("cpu")


def train_curve(
    curve: Curve,
    data: Iterable[Any],
    config: CurveTrainConfig | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    log_path: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    evaluate: CurveEvaluator | None = None,
    attack: CurveAttack | None = None,
    amp: bool = True,
    compile: bool = False,
    **overrides: Any,
) -> CurveTrainResult:
    """Train the interior control points of ``curve`` with SGD.

    Per minibatch one :math:`t \\sim U[0, 1)` is drawn from a ``torch.Generator`` seeded with
    ``seed``; the loss is
    :math:`\\mathrm{CE}(f(x; \\varphi(t)), y) + w_{aux}\\sum_j \\mathrm{CE}(\\mathrm{aux}_j, y)
    + \\tfrac{\\lambda}{2}\\lVert\\varphi(t)\\rVert^2` where the L2 term runs over the
    interpolated entries (there is no optimizer weight decay on the control points). BatchNorm
    uses batch statistics; its running-statistic updates land on temporary copies, so neither
    the endpoints nor ``curve.model`` change. Every module's train/eval flag is restored.

    With ``checkpoint_dir``, the control points, optimizer (momentum) state, the ``t``
    generator, the global torch RNG and the history are saved atomically after every epoch,
    and a run started on a directory holding a checkpoint resumes from it: an interrupted and
    resumed run ends with exactly the control points of an uninterrupted one (given a data
    iterable whose order depends only on the epoch: it gets ``set_epoch(e)`` when it has that
    method, or draws from the global torch RNG). The learning rate is a pure function of the
    epoch (:func:`lr_at`), so there is no scheduler state to restore.

    Data parallelism (``torchrun``; :mod:`neuralign.distributed`): pass this rank's shard
    as ``data`` (``TensorLoader(..., rank=, world_size=, drop_last=True)``: every rank runs
    the same number of steps). The ``t`` generator is seeded identically on every rank, so
    all ranks train the same point :math:`\varphi(t)` at a step, and after the backward
    pass the control points' gradients are averaged across ranks with one flat all-reduce
    (:func:`~neuralign.distributed.all_reduce_gradients_`). That is what
    ``DistributedDataParallel`` would do, done by hand because the trainable tensors are the
    curve's control points, which reach the network through
    ``functional_call(curve.model, state_at(t))`` rather than through a module forward (a
    DDP wrapper would also re-broadcast the endpoint buffers every step). With a mean loss
    the averaged gradient equals the global batch's, so ``N`` ranks of batch ``B/N`` follow
    a single process of batch ``B``; BatchNorm normalises with per-rank batch statistics.
    Metrics are reduced across ranks; only rank 0 writes the checkpoint, log and curve
    (the others wait at a barrier).

    GPU fast path: with ``amp`` on CUDA the forward runs under bf16 autocast (losses in
    float32) on channels-last input; ``compile=True`` wraps the network's functional forward
    in :func:`torch.compile` (off by default: compilation takes tens of seconds). Metric sums
    stay on the device; the host synchronises once per epoch.

    Args:
        curve: The curve; trained in place (and moved to ``device`` when given).
        data: Iterable of ``(x, y)`` training batches (``x`` float, ``y`` int64).
        config: The hyper-parameters (:class:`~neuralign.curves.CurveTrainConfig`; default:
            the paper's). ``config.epochs`` counts epochs done before a resume too.
        device: Device to train on; default: where the curve is.
        progress: Show a tqdm progress bar.
        log_path: Write the history as JSON lines (one per epoch), atomically every epoch.
        checkpoint_dir: Save (and resume from) a training checkpoint here; the final curve is
            also written there as ``curve.safetensors``.
        seed: Seed of the generator drawing ``t``.
        evaluate: Called with the curve after every epoch; the metrics it returns join
            that epoch's record (e.g. :func:`neuralign.paths.curve_test_point`: test loss and
            accuracy at one ``t`` with BatchNorm recomputed).
        amp: bf16 autocast and channels-last input on CUDA (ignored elsewhere).
        compile: Compile the functional forward with :func:`torch.compile`.
        attack: Robust curve training (Tatro et al. 2020; docs/method.md, Robustness): per minibatch,
            ``attack(curve.model, state, x, y)`` crafts inputs against the sampled point
            :math:`\varphi(t)` (``state``: its detached state dict, e.g.
            :meth:`neuralign.attacks.PGD.attack_state`) and the curve is trained on those
            inputs only, at that same ``t``. For BatchNorm networks craft the examples with
            batch statistics (``PGD(..., mode="batch-stats")``): interior points carry
            endpoint A's running statistics, which do not describe them.
        **overrides: Fields of :class:`CurveTrainConfig` replacing ``config``'s
            (``train_curve(curve, data, epochs=10, lr=0.05)``).

    Returns:
        A :class:`CurveTrainResult` with the per-epoch history.

    Raises:
        ConfigError: on a curve without trainable points or bad arguments.
        CheckpointError: when the checkpoint in ``checkpoint_dir`` does not fit the curve.
    """
    cfg = CurveTrainConfig.of(config or CurveTrainConfig()).replace(**overrides)
    cfg.validate("train_curve")
    params = curve.control_parameters()
    if not params:
        raise ConfigError(
            f"{type(curve).__name__} with {curve.num_bends} bends has no trainable control "
            "point; use num_bends >= 3"
        )
    if device is not None:
        curve.to(device)
    dev = _curve_device(curve)
    optimizer = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=0.0
    )
    generator = torch.Generator().manual_seed(seed)
    keys = curve.interpolated_keys
    distributed = dist_.is_distributed()
    if distributed and isinstance(data, TensorLoader) and data.world_size != dist_.world_size():
        logger.warning(
            "train_curve: distributed run, but the training loader is not sharded "
            "(world_size=%d): every rank trains on the same batches",
            data.world_size,
        )
    use_amp = amp and dev.type == "cuda"
    autocast = amp_autocast(dev, amp)

    def forward(state: Mapping[str, Tensor], x: Tensor) -> Any:
        return functional_forward(curve.model, state, x)

    fwd = torch.compile(forward) if compile else forward

    def train_epoch(epoch: int) -> dict[str, float]:
        t0 = time.perf_counter()
        curve.train()
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)
        epoch_lr = set_epoch_lr(optimizer, epoch, cfg)
        # loss, objective, correct, count: summed on the device, read once per epoch
        sums = torch.zeros(4, dtype=torch.float64, device=dev)
        for x, y in data:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if use_amp and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            t = float(torch.rand((), generator=generator))
            state = curve.state_at(t)
            if attack is not None:
                x = attack(curve.model, {k: v.detach() for k, v in state.items()}, x, y)
            with autocast():
                out = fwd(state, x)
            logits, aux = split_logits(out)
            ce = F.cross_entropy(logits.float(), y)
            objective = ce
            for a in aux:
                objective = objective + cfg.aux_weight * F.cross_entropy(a.float(), y)
            if cfg.weight_decay:
                l2 = torch.stack([state[k].float().pow(2).sum() for k in keys]).sum()
                objective = objective + 0.5 * cfg.weight_decay * l2
            optimizer.zero_grad(set_to_none=True)
            if objective.requires_grad:  # False only at t == 0 exactly (the endpoint)
                objective.backward()
                dist_.all_reduce_gradients_(params)
                optimizer.step()
            bs = y.shape[0]
            with torch.no_grad():
                sums[0] += ce.detach().double() * bs
                sums[1] += objective.detach().double() * bs
                sums[2] += (logits.detach().argmax(1) == y).sum()
                sums[3] += bs
        if distributed:
            dist_.all_reduce_(sums)
        loss_sum, objective_sum, correct, n_seen = sums.tolist()
        if n_seen == 0:
            raise ConfigError("train_curve: the training data yielded no batch")
        record: dict[str, float] = {
            "epoch": epoch + 1,
            "loss": loss_sum / n_seen,
            "objective": objective_sum / n_seen,
            "acc": 100.0 * correct / n_seen,
            "lr": epoch_lr,
        }
        if evaluate is not None:
            record.update(evaluate(curve))
        record["time"] = time.perf_counter() - t0
        return record

    def save_state(done: int, history: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "family": curve.family,
            "num_bends": curve.num_bends,
            "interpolated_keys": list(curve.interpolated_keys),
            "epoch": done,
            "points": [p.detach().cpu().clone() for p in curve.control_parameters()],
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "rng": get_rng_state(),
            "history": history,
        }

    def load_state(payload: dict[str, Any]) -> tuple[int, list[dict[str, float]]]:
        _restore(payload, ckpt_path, curve, optimizer, generator)
        return int(payload["epoch"]), list(payload["history"])

    def publish(done: int, history: list[dict[str, float]]) -> None:
        if log_path is not None:
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

    ckpt_path = Path(checkpoint_dir) / _CHECKPOINT_NAME if checkpoint_dir is not None else None
    run = run_epochs(
        train_epoch,
        cfg.epochs,
        checkpoint=ckpt_path,
        save_state=save_state,
        load_state=load_state,
        publish=publish if log_path is not None else None,
        modules=[curve],
        desc=f"curve ({curve.family})",
        progress=progress,
        postfix=lambda r: {"loss": f"{r['loss']:.3f}", "acc": f"{r['acc']:.1f}"},
    )
    if checkpoint_dir is not None:
        final = Path(checkpoint_dir) / _CURVE_NAME
        dist_.on_main(lambda: curve.save(final))
    return CurveTrainResult(
        history=run.history, resumed_from=run.resumed_from, checkpoint_path=ckpt_path
    )


def _restore(
    payload: dict[str, Any],
    path: Path | None,
    curve: Curve,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    if (
        payload.get("format") != _FORMAT
        or payload.get("family") != curve.family
        or payload.get("num_bends") != curve.num_bends
        or payload.get("interpolated_keys") != list(curve.interpolated_keys)
    ):
        raise CheckpointError(
            f"{path} holds a checkpoint of another curve (family {payload.get('family')!r}, "
            f"{payload.get('num_bends')} bends); use another checkpoint_dir"
        )
    params = curve.control_parameters()
    points: list[Tensor] = payload["points"]
    if len(points) != len(params) or any(
        p.shape != q.shape for p, q in zip(params, points, strict=False)
    ):
        raise CheckpointError(f"{path}: control point shapes do not fit the curve")
    with torch.no_grad():
        for p, q in zip(params, points, strict=False):
            p.copy_(q)
    optimizer.load_state_dict(payload["optimizer"])
    generator.set_state(payload["generator"])
    set_rng_state(payload["rng"])
