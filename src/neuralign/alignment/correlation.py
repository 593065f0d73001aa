"""Activation-correlation alignment: the paper's Algorithm 1 (Tatro et al. 2020).

One forward pass of each model over the data; at every tap of every permutation group the
post-activation unit values of A and B (every spatial position of every image is a sample)
update a streaming float64 cross-correlation accumulator. Tied groups (a ResNet stage's
residual stream) sum the correlation matrices of their members; each group's permutation
is the linear assignment maximising the summed matched correlation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from neuralign import distributed as dist_
from neuralign.alignment._lap import solve_family, solve_lap
from neuralign.alignment._lockstep import LockstepRunner
from neuralign.alignment.correlation_stats import CrossCorrelation
from neuralign.errors import DataError
from neuralign.perm.spec import PermutationSpec, Tap


@dataclass
class CorrelationStats:
    """Accumulated statistics of one alignment pass.

    Attributes:
        accumulators: per group, one :class:`CrossCorrelation` per tap.
        num_images: images seen.
    """

    accumulators: dict[str, list[CrossCorrelation]]
    num_images: int

    def correlation(self, group: str) -> torch.Tensor:
        """Summed correlation matrix of a group over its taps (rows: A, columns: B)."""
        accs = self.accumulators[group]
        return torch.stack([a.correlation() for a in accs]).sum(0)

    def merge_(self, other: CorrelationStats) -> CorrelationStats:
        """Fold another pass's statistics in (e.g. from another rank or shard)."""
        for g, accs in self.accumulators.items():
            for mine, theirs in zip(accs, other.accumulators[g], strict=True):
                mine.merge_(theirs)
        self.num_images += other.num_images
        return self

    def all_reduce_(self) -> CorrelationStats:
        """Sum the statistics of every rank into every rank (no-op in a single process)."""
        for accs in self.accumulators.values():
            for acc in accs:
                acc.all_reduce_()
        self.num_images = int(dist_.all_reduce_sum([self.num_images])[0])
        return self


@torch.no_grad()
def correlation_statistics(
    model_a: nn.Module,
    model_b: nn.Module,
    spec: PermutationSpec,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]] | Iterable[torch.Tensor],
    *,
    pre_activation: bool = False,
    device: torch.device | str | None = None,
    batch_dtype: torch.dtype = torch.float32,
    micro_batches: int = 4,
    progress: bool = False,
    distributed: bool | None = None,
) -> CorrelationStats:
    """Stream the cross-correlation statistics of every group over ``data``.

    The models are run in eval mode (every module's mode is restored afterwards), node by
    node in lock-step (:class:`~neuralign.alignment._lockstep.LockstepRunner`): no hooks are
    attached, and memory stays near that of one plain forward pass. Each batch is processed
    in ``micro_batches`` pieces (the statistics do not depend on the split) so that A's and
    B's live activations together take about what one model's take on the full batch.

    In a distributed run (``distributed=None``: whenever a multi-process group is
    initialised) every rank must pass the same ``data``: rank ``r`` processes the batches
    ``i`` with ``i % world_size == r`` and the statistics are then summed across ranks
    (:meth:`CorrelationStats.all_reduce_`), so every rank returns the single-process
    statistics (exactly up to float64 summation order; use ``batch_dtype=torch.float64``
    for per-batch sums that do not depend on the batching either).
    """
    shard = dist_.is_distributed() if distributed is None else distributed
    if device is None:
        p = next(iter(model_a.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    # Each tap node feeds one accumulator per (group, tap) that reads it.
    runner = LockstepRunner(model_a, model_b, spec, pre_activation)
    readers: dict[str, list[tuple[str, int, Tap]]] = {}
    accs: dict[str, list[CrossCorrelation]] = {}
    for g, grp in spec.groups.items():
        taps = [t for t in grp.taps if t.mode == runner.mode]
        if not taps:
            continue
        accs[g] = [CrossCorrelation(grp.size, device, batch_dtype) for _ in taps]
        for i, tap in enumerate(taps):
            node = (tap.pre_node or tap.node) if pre_activation else tap.node
            readers.setdefault(node, []).append((g, i, tap))
    # Projection taps (units inside nn.MultiheadAttention) read each model's own weights.
    state_a = model_a.state_dict()
    state_b = model_b.state_dict()

    def on_tap(node: str, va: torch.Tensor, vb: torch.Tensor) -> None:
        for g, i, tap in readers[node]:
            a = tap.read(va, state_a)
            b = tap.read(vb, state_b)
            dim = a.ndim - 1 if tap.proj is not None else tap.dim
            if dim != 1:
                a, b = a.movedim(dim, 1), b.movedim(dim, 1)
            accs[g][i].update(a, b)

    modes = [(m, m.training) for m in (*model_a.modules(), *model_b.modules())]
    model_a.eval()
    model_b.eval()
    images = 0
    try:
        stream = dist_.shard_batches(data) if shard else data
        show = progress and dist_.is_main()
        for batch in tqdm(stream, desc="align", unit="batch", disable=not show, leave=False):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(device)
            for chunk in x.split(max(1, -(-x.shape[0] // micro_batches))):
                runner.run(chunk, on_tap)
            images += x.shape[0]
    finally:
        for m, flag in modes:
            m.training = flag
    stats = CorrelationStats(accs, images)
    if shard:
        stats.all_reduce_()
        images = stats.num_images
    if images < 2:
        raise DataError(
            f"alignment data holds {images} image(s); correlations need at least 2 "
            "(use a larger subset_fraction or dataset)"
        )
    return stats


def correlation_of(
    stats: CorrelationStats, spec: PermutationSpec, perms: dict[str, torch.Tensor]
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean matched correlation per group for the identity and for ``perms``.

    Averaged over the group's units and taps (tied members count once each).
    """
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    for g, grp in spec.groups.items():
        if g not in stats.accumulators:
            continue
        c = stats.correlation(g).cpu()
        k = len(stats.accumulators[g])
        rows = torch.arange(grp.size)
        before[g] = float(c.diagonal().mean()) / k
        after[g] = float(c[rows, perms[g].cpu()].mean()) / k
    return before, after


def match_correlation(
    stats: CorrelationStats, spec: PermutationSpec
) -> tuple[dict[str, torch.Tensor], dict[str, float], dict[str, float]]:
    """Solve each group's assignment; return ``(perms, mean corr before, mean corr after)``.

    "Before" is the identity matching. Groups without taps keep the identity. Structured
    groups (GroupNorm blocks, attention heads) are assigned block to block, linked groups
    with one block permutation (:func:`~neuralign.alignment._lap.solve_family`); a linked
    group without taps contributes nothing to its family's block choice.
    """
    perms: dict[str, torch.Tensor] = {}
    for family in spec.families():
        grps = [spec.groups[g] for g in family]
        if grps[0].blocks == 1 and len(family) == 1:
            g = family[0]
            perms[g] = (
                solve_lap(stats.correlation(g).cpu())
                if g in stats.accumulators
                else torch.arange(grps[0].size)
            )
            continue
        scores = [
            stats.correlation(g.name).cpu()
            if g.name in stats.accumulators
            else torch.zeros(g.size, g.size, dtype=torch.float64)
            for g in grps
        ]
        for g, p in zip(family, solve_family(scores, grps[0].blocks)):
            perms[g] = p
    perms = {g: perms[g] for g in spec.groups}
    before, after = correlation_of(stats, spec, perms)
    return perms, before, after
