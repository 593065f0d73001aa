"""Recompute BatchNorm running statistics for a point in weight space.

Points on a curve never had BatchNorm statistics of their own: interpolating the running
statistics of the endpoints is wrong (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity,
and Fast Ensembling of DNNs", Sec. A.2). At every evaluated point the statistics are
recomputed from data, as in the reference code of Garipov et al. and of Tatro et al. (2020),
"Optimizing Mode Connectivity via Neuron Alignment".
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from neuralign import distributed as dist_
from neuralign.curves.base import functional_forward
from neuralign.errors import DataError

__all__ = ["batchnorm_modules", "has_batchnorm", "recompute_bn"]

logger = logging.getLogger(__name__)


def batchnorm_modules(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """``(name, module)`` of every BatchNorm layer of ``model`` that tracks running stats."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    ]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer with running statistics."""
    return bool(batchnorm_modules(model))


class _PooledMoments:
    """Exact streaming per-channel mean and sum of squared deviations.

    Batches are merged with the parallel update of Chan, Golub & LeVeque (1979), weighted by
    their element counts, so the result equals the statistics of the concatenated data for
    any batch sizes (unlike PyTorch's cumulative average over batches, ``momentum=None``,
    which weights every batch equally).
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        acc = torch.float32 if x.device.type == "mps" else torch.float64
        xd = x.detach()
        dims = [d for d in range(xd.dim()) if d != 1]
        n = xd.numel() // xd.shape[1]
        if n == 0:
            return
        # One fused pass (Welford inside ATen, accumulating in double for float inputs on
        # CPU) gives the batch's moments; batches are then merged exactly in float64.
        var_b, mean_b = torch.var_mean(xd, dim=dims, correction=0)
        mean_b = mean_b.to(acc)
        m2_b = var_b.to(acc) * n
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean_b, m2_b
            return
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2_b + delta.pow(2) * (self.count * n / total)
        self.count = total

    def merge_(self, count: int, mean: Tensor, m2: Tensor) -> None:
        """Fold in the moments of other data (Chan et al.'s pairwise update)."""
        if count == 0:
            return
        if self.mean is None or self.m2 is None or self.count == 0:
            self.count, self.mean, self.m2 = count, mean.clone(), m2.clone()
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta.pow(2) * (self.count * count / total)
        self.count = total

    def add_batch(self, n: int, mean: Tensor, var_unbiased: Tensor) -> None:
        """Fold in one batch of ``n`` values per channel given its mean and unbiased variance."""
        if n == 0:
            return
        acc = torch.float32 if mean.device.type == "mps" else torch.float64
        m2 = var_unbiased.to(acc) * (n - 1) if n > 1 else torch.zeros_like(mean, dtype=acc)
        self.merge_(n, mean.to(acc), m2)


def _reads_own_stats(module: _BatchNorm) -> bool:
    """Whether ``module`` is a stock BatchNorm whose train-mode forward honours ``momentum``.

    For those, running BatchNorm with ``momentum=1`` leaves in its running buffers exactly the
    batch mean and unbiased batch variance it normalised with (ATen accumulates them in
    double on CPU), so the statistics come out of BatchNorm's own reduction: no second pass
    over the layer's input. Any other subclass is measured by a pre-hook instead.
    """
    return type(module).forward is _BatchNorm.forward and type(module) in (
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
    )


def _reduce_moments(
    moments: dict[str, _PooledMoments], channels: dict[str, int], device: torch.device
) -> None:
    """Replace every rank's moments by the pooled moments of all ranks (in rank order).

    Each rank packs ``[count, mean, m2]`` of every layer into one float64 vector; the vectors
    are all-gathered and merged rank by rank, so every rank ends with the same statistics.
    """
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    parts = []
    for name, acc in moments.items():
        c = channels[name]
        if acc.mean is None or acc.m2 is None:
            parts.append(torch.zeros(1 + 2 * c, dtype=acc_dtype, device=device))
        else:
            head = torch.tensor([float(acc.count)], dtype=acc_dtype, device=device)
            parts.append(torch.cat([head, acc.mean.to(device), acc.m2.to(device)]))
    gathered = dist_.all_gather(torch.cat(parts))
    for acc in moments.values():
        acc.count, acc.mean, acc.m2 = 0, None, None
    for flat in gathered:
        offset = 0
        for name, acc in moments.items():
            c = channels[name]
            chunk = flat[offset : offset + 1 + 2 * c]
            offset += 1 + 2 * c
            acc.merge_(int(chunk[0].item()), chunk[1 : 1 + c], chunk[1 + c :])


def recompute_bn(
    model: nn.Module,
    state: Mapping[str, Tensor],
    data: Iterable[Any],
    *,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    distributed: bool | None = None,
) -> dict[str, Tensor]:
    """Return ``state`` with every BatchNorm's running statistics recomputed on ``data``.

    One pass over ``data`` (or its first ``max_batches`` batches) with the network at
    ``state``, BatchNorm layers in train mode (each normalises with its batch statistics,
    exactly as during training) and every other module in eval mode (no dropout). Each
    batch's per-channel mean and variance of every BatchNorm input are merged into the exact
    pooled statistics over all batches, weighted by element count:

    .. math::

        \\mu_c = \\frac{1}{N}\\sum_{i} x_{i,c}, \\qquad
        \\sigma^2_c = \\frac{1}{N - 1}\\sum_{i} (x_{i,c} - \\mu_c)^2,

    where ``i`` runs over all samples and spatial positions (``N`` of them): this is the
    unbiased variance BatchNorm keeps. PyTorch's own recipe (reset, ``momentum=None``, one
    train-mode pass) averages the per-batch means and per-batch variances with equal weights:
    its mean is exact only for equal-sized batches, and its variance is the mean
    *within-batch* variance, which misses the spread of the batch means. The pooled values
    here are exact for any batching. ``num_batches_tracked`` is set to the number of batches.

    The batch moments come from BatchNorm's own reduction, not a second pass over its input:
    stock BatchNorm layers run with ``momentum=1`` on zeroed copies of their buffers, so after
    each call the buffers hold that batch's mean and unbiased variance (what it normalised
    with), which a forward hook merges in float64 (Chan, Golub & LeVeque 1979). Other
    BatchNorm subclasses get a pre-hook that measures their input instead.

    In a distributed run (``distributed=None``: whenever a multi-process group is
    initialised) every rank must pass the same ``data``: rank ``r`` forwards the batches
    ``i`` with ``i % world_size == r`` (of the first ``max_batches``), each exactly as a
    single process would (so train-mode BatchNorm normalises with the same batch
    statistics), and the pooled count, mean and squared deviations of every layer are
    gathered and merged across ranks: every rank returns the single-process statistics (up
    to float64 rounding of the merge order).

    With a ``BatchNorm1d`` layer, batches of a single sample are skipped with a warning
    (PyTorch cannot normalise them in train mode).

    Nothing is mutated: the model's modules get their train/eval flags and momenta back and
    the hooks are removed (also on error); ``state`` is not written to.

    Args:
        model: The architecture.
        state: Full state dict of the point to evaluate.
        data: Iterable of ``(x, y)`` batches (only ``x`` is used); a fixed, non-augmented
            training subset is a good cheap choice, the full augmented training set is the
            reference's choice.
        max_batches: Use at most this many batches.
        device: Where to run; defaults to the device of the state's tensors.
        distributed: Shard the batches and reduce across ranks (default: when distributed).

    Returns:
        A new dict: the same tensors as ``state`` except the BatchNorm running statistics.

    Raises:
        DataError: if ``data`` yields no batch, or a layer sees a single value per channel.
    """
    bns = batchnorm_modules(model)
    if not bns:
        return dict(state)
    first = next(iter(state.values()))
    dev = torch.device(device) if device is not None else first.device
    shard = dist_.is_distributed() if distributed is None else distributed
    work = {k: v.to(dev) for k, v in state.items()}
    prefixes = {name: (f"{name}." if name else "") for name, _ in bns}
    for name, _ in bns:
        for suffix in ("running_mean", "running_var", "num_batches_tracked"):
            key = prefixes[name] + suffix
            if key in work:  # BatchNorm updates these in place: work on fresh tensors
                # (zeros: with momentum=1 the update 1*batch + 0*old must not see inf/nan)
                work[key] = torch.zeros_like(work[key])
    moments = {name: _PooledMoments() for name, _ in bns}
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for _, m in bns}
    handles = []
    batches = 0
    skipped = 0
    skip_single = any(isinstance(m, nn.BatchNorm1d) for _, m in bns)
    try:
        model.eval()
        for name, m in bns:
            m.train()
            if _reads_own_stats(m):
                m.momentum = 1.0

                def post(
                    mod: nn.Module, args: tuple[Any, ...], _out: Any, _acc=moments[name]
                ) -> None:
                    x = args[0]
                    n = x.numel() // x.shape[1] if x.dim() > 1 else 0
                    _acc.add_batch(n, mod.running_mean, mod.running_var)  # type: ignore[arg-type]

                handles.append(m.register_forward_hook(post))
            else:

                def pre(_mod: nn.Module, args: tuple[Any, ...], _acc=moments[name]) -> None:
                    _acc.update(args[0])

                handles.append(m.register_forward_pre_hook(pre))
        with torch.no_grad():
            stream = dist_.shard_batches(data, limit=max_batches) if shard else data
            for batch in stream:
                if not shard and max_batches is not None and batches >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if skip_single and x.shape[0] == 1:
                    # BatchNorm1d cannot normalise one sample in train mode; a trailing
                    # batch of one (drop_last=False) is skipped rather than failing the pass.
                    skipped += 1
                    continue
                functional_forward(model, work, x.to(dev))
                batches += 1
    finally:
        for h in handles:
            h.remove()
        for module, flag in modes.items():
            module.training = flag
        for bn_module, momentum in momenta.items():
            bn_module.momentum = momentum
    if skipped:
        warnings.warn(
            f"recompute_bn skipped {skipped} batch(es) of a single sample (BatchNorm1d cannot "
            "use them in train mode)",
            stacklevel=2,
        )
    if shard:
        channels = {name: state[prefixes[name] + "running_mean"].numel() for name, _ in bns}
        _reduce_moments(moments, channels, dev)
        batches = int(dist_.all_reduce_sum([batches])[0])
    if batches == 0:
        raise DataError("recompute_bn: the BatchNorm data yielded no usable batch")
    out = dict(state)
    for name, _ in bns:
        acc = moments[name]
        if acc.count == 0:
            # Layer not reached in eval-mode forward (e.g. an auxiliary head): its statistics
            # are never used, keep them.
            logger.debug("recompute_bn: BatchNorm %r was not reached; kept its stats", name)
            continue
        if acc.mean is None or acc.m2 is None or acc.count < 2:
            raise DataError(
                f"recompute_bn: BatchNorm layer {name!r} saw fewer than 2 values per channel; "
                "use more BN data"
            )
        p = prefixes[name]
        ref_mean = state[p + "running_mean"]
        ref_var = state[p + "running_var"]
        out[p + "running_mean"] = acc.mean.to(device=ref_mean.device, dtype=ref_mean.dtype)
        out[p + "running_var"] = (acc.m2 / (acc.count - 1)).to(
            device=ref_var.device, dtype=ref_var.dtype
        )
        if p + "num_batches_tracked" in state:
            ref_nbt = state[p + "num_batches_tracked"]
            out[p + "num_batches_tracked"] = torch.tensor(
                batches, dtype=ref_nbt.dtype, device=ref_nbt.device
            )
    return out
