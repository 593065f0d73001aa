"""Several points of weight space evaluated in one pass, with :func:`torch.func.vmap`.

Path and plane evaluation (Tatro et al. 2020, Sec. 5; Garipov et al. 2018, Fig. 1) visit
many networks of one architecture on the same data: 65 values of ``t`` per path, a grid of
plane points. Each point needs its BatchNorm statistics recomputed on training batches
(:func:`~neuralign.paths.recompute_bn`) and a test pass. Here ``K`` points are stacked
(every state-dict entry gets a leading dimension ``K``) and each batch is pushed through
all of them at once: ``vmap`` turns the per-point forward into batched kernels (convolutions
with ``K`` groups, batched matrix products), so a small model on a GPU runs ``K`` times fewer,
larger kernels instead of being bound by Python and launch overhead.

The statistics are the same as the one-point path's: the pooled per-channel mean and
unbiased variance of every BatchNorm input over all BN batches, read from BatchNorm's own
batch reduction (``momentum=1`` on zeroed buffers) and merged in float64 with the pairwise
update of Chan, Golub & LeVeque (1979); losses and correct counts are summed in float64. The
results equal the one-point results up to float rounding of the batched kernels.

:func:`points_per_pass` is the automatic policy: batch points only on an accelerator and
for a small model (on a CPU the batched kernels are no faster than a loop over points).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from neuralign.errors import DataError
from neuralign.models.common import split_logits
from neuralign.paths.bn import _PooledMoments, _reads_own_stats, batchnorm_modules

__all__ = [
    "SMALL_MODEL_PARAMETERS",
    "evaluate_states",
    "points_per_pass",
    "recompute_bn_many",
    "stack_states",
]

#: Models with at most this many parameters count as "small" for :func:`points_per_pass`.
SMALL_MODEL_PARAMETERS = 2_000_000


def points_per_pass(model: nn.Module, device: str | torch.device | None) -> int:
    """How many points to evaluate per pass by default: 8 for a small model on a GPU, else 1.

    On a CPU the batched kernels do the same arithmetic as a loop over points (measured:
    no faster), so points go one by one; on CUDA a small model (at most
    :data:`SMALL_MODEL_PARAMETERS` parameters) is launch-bound and gains from batching.
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    if dev.type != "cuda":
        return 1
    size = sum(p.numel() for p in model.parameters())
    return 8 if size <= SMALL_MODEL_PARAMETERS else 1


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def stack_states(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Stack state dicts with the same keys into one dict of ``(K, *shape)`` tensors."""
    if not states:
        raise ValueError("no states to stack")
    keys = list(states[0])
    return {k: torch.stack([s[k] for s in states]) for k in keys}


def _unbatched_buffers(
    model: nn.Module, keys: Iterable[str], dev: torch.device
) -> dict[str, Tensor]:
    """The model's non-persistent buffers (absent from state dicts), on ``dev``."""
    have = set(keys)
    return {n: b.to(dev) for n, b in model.named_buffers() if n not in have}


def _restore(model: nn.Module, modes: dict[nn.Module, bool]) -> None:
    for m, flag in modes.items():
        m.training = flag


@torch.no_grad()
def recompute_bn_many(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    data: Iterable[Any],
    *,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, Tensor]]:
    """:func:`~neuralign.paths.recompute_bn` for ``K`` states at once (one vmapped pass).

    Every state gets the exact pooled BatchNorm statistics of its own BN inputs over
    ``data`` (see :func:`~neuralign.paths.recompute_bn`); the batches are read once and
    pushed through all states together. Single-process only (the caller falls back to the
    one-point path in a distributed run). Only stock ``BatchNorm1d/2d/3d`` layers are
    supported here (others: use the one-point path).

    Args:
        model: The architecture.
        states: Full state dicts with identical keys, shapes and dtypes.
        data: Iterable of ``(x, y)`` batches (only ``x`` is used).
        max_batches: Use at most this many batches.
        device: Where to run; default: the device of the first state's tensors.

    Returns:
        One new dict per state: its tensors with the BatchNorm running statistics replaced.

    Raises:
        DataError: if ``data`` yields no usable batch or a layer sees < 2 values per channel.
        ValueError: if a BatchNorm layer is not a stock one.
    """
    bns = batchnorm_modules(model)
    if not bns:
        return [dict(s) for s in states]
    if not all(_reads_own_stats(m) for _, m in bns):
        raise ValueError("recompute_bn_many supports stock BatchNorm1d/2d/3d layers only")
    first = next(iter(states[0].values()))
    dev = torch.device(device) if device is not None else first.device
    stacked = {k: v.to(dev) for k, v in stack_states(states).items()}
    prefixes = {name: (f"{name}." if name else "") for name, _ in bns}
    for name, _ in bns:
        for suffix in ("running_mean", "running_var", "num_batches_tracked"):
            key = prefixes[name] + suffix
            if key in stacked:
                stacked[key] = torch.zeros_like(stacked[key])
    extra = _unbatched_buffers(model, stacked, dev)
    names = {id(m): name for name, m in bns}
    moments = {name: _PooledMoments() for name, _ in bns}
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for _, m in bns}
    order: list[str] = []
    captured: list[Tensor] = []
    counts: list[int] = []

    def post(mod: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        x = args[0]
        order.append(names[id(mod)])
        counts.append(x.numel() // x.shape[1] if x.dim() > 1 else 0)
        captured.append(cast(Tensor, mod.running_mean).clone())
        captured.append(cast(Tensor, mod.running_var).clone())

    def run(state: dict[str, Tensor], x: Tensor) -> list[Tensor]:
        captured.clear()
        functional_call(model, {**state, **extra}, (x,), strict=True)
        return list(captured)

    batched = vmap(run, in_dims=(0, None))
    handles = []
    batches = 0
    skip_single = any(isinstance(m, nn.BatchNorm1d) for _, m in bns)
    try:
        model.eval()
        for _, m in bns:
            m.train()
            m.momentum = 1.0
            handles.append(m.register_forward_hook(post))
        for batch in data:
            if max_batches is not None and batches >= max_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if skip_single and x.shape[0] == 1:
                continue
            order.clear()
            counts.clear()
            out = batched(stacked, x.to(dev))
            for i, name in enumerate(order):
                moments[name].add_batch(counts[i], out[2 * i], out[2 * i + 1])
            batches += 1
    finally:
        for h in handles:
            h.remove()
        _restore(model, modes)
        for m, momentum in momenta.items():
            m.momentum = momentum
    if batches == 0:
        raise DataError("recompute_bn_many: the BatchNorm data yielded no usable batch")
    results = [dict(s) for s in states]
    for name, _ in bns:
        acc = moments[name]
        if acc.count == 0:
            continue
        if acc.mean is None or acc.m2 is None or acc.count < 2:
            raise DataError(
                f"recompute_bn_many: BatchNorm layer {name!r} saw fewer than 2 values per "
                "channel; use more BN data"
            )
        p = prefixes[name]
        var = acc.m2 / (acc.count - 1)
        for k, out_state in enumerate(results):
            ref_mean = states[k][p + "running_mean"]
            ref_var = states[k][p + "running_var"]
            out_state[p + "running_mean"] = acc.mean[k].to(ref_mean.device, ref_mean.dtype)
            out_state[p + "running_var"] = var[k].to(ref_var.device, ref_var.dtype)
            if p + "num_batches_tracked" in states[k]:
                ref = states[k][p + "num_batches_tracked"]
                out_state[p + "num_batches_tracked"] = torch.tensor(
                    batches, dtype=ref.dtype, device=ref.device
                )
    return results


@torch.no_grad()
def evaluate_states(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    data: Iterable[Any],
    *,
    device: str | torch.device | None = None,
) -> list[tuple[float, float]]:
    """Mean cross-entropy and accuracy (%) of ``K`` states on ``data``, in one vmapped pass.

    The batched counterpart of :func:`~neuralign.paths.evaluate_state` (eval mode; sums kept
    on the device in float64, one host synchronisation at the end). Single-process only.

    Returns:
        ``[(loss, accuracy), ...]``, one pair per state.
    """
    first = next(iter(states[0].values()))
    dev = torch.device(device) if device is not None else first.device
    stacked = {k: v.to(dev) for k, v in stack_states(states).items()}
    extra = _unbatched_buffers(model, stacked, dev)

    def run(state: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits, _ = split_logits(functional_call(model, {**state, **extra}, (x,), strict=True))
        loss = F.cross_entropy(logits.float(), y, reduction="sum").double()
        return loss, (logits.argmax(1) == y).sum().double()

    batched = vmap(run, in_dims=(0, None, None))
    sums = torch.zeros(2, len(states), dtype=torch.float64, device=dev)
    n = 0
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for x, y in data:
            loss, correct = batched(stacked, x.to(dev), y.to(dev))
            sums[0] += loss
            sums[1] += correct
            n += int(y.shape[0])
    finally:
        _restore(model, modes)
    if n == 0:
        raise DataError("evaluate_states: the data yielded no batch")
    losses, corrects = sums.tolist()
    # NaN logits (a diverged state) have no meaningful argmax: NaN accuracy, as in
    # evaluate_state (docs/reliability.md, "Divergence")
    return [
        (loss, float("nan")) if math.isnan(loss) else (loss / n, 100.0 * c / n)
        for loss, c in zip(losses, corrects, strict=True)
    ]
