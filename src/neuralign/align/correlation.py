"""Activation-correlation alignment: the paper's Algorithm 1 (Tatro et al. 2020; METHOD.md §2).

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

from neuralign.align._lap import solve_lap
from neuralign.align._lockstep import LockstepRunner
from neuralign.align.correlation_stats import CrossCorrelation
from neuralign.errors import DataError
from neuralign.perm.spec import PermutationSpec


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
    micro_batches: int = 2,
    progress: bool = False,
) -> CorrelationStats:
    """Stream the cross-correlation statistics of every group over ``data``.

    The models are run in eval mode (every module's mode is restored afterwards), node by
    node in lock-step (:class:`~neuralign.align._lockstep.LockstepRunner`): no hooks are
    attached, and memory stays near that of one plain forward pass. Each batch is processed
    in ``micro_batches`` pieces (the statistics do not depend on the split) so that A's and
    B's live activations together take about what one model's take on the full batch.
    """
    if device is None:
        p = next(iter(model_a.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    # Each tap node feeds one accumulator per (group, tap) that reads it.
    runner = LockstepRunner(model_a, model_b, spec, pre_activation)
    readers: dict[str, list[tuple[str, int, int, int, int]]] = {}
    accs: dict[str, list[CrossCorrelation]] = {}
    for g, grp in spec.groups.items():
        taps = [t for t in grp.taps if t.mode == runner.mode]
        if not taps:
            continue
        accs[g] = [CrossCorrelation(grp.size, device, batch_dtype) for _ in taps]
        for i, tap in enumerate(taps):
            node = (tap.pre_node or tap.node) if pre_activation else tap.node
            readers.setdefault(node, []).append((g, i, tap.start, tap.size, tap.dim))

    def on_tap(node: str, va: torch.Tensor, vb: torch.Tensor) -> None:
        for g, i, start, size, dim in readers[node]:
            a = va.narrow(dim, start, size)
            b = vb.narrow(dim, start, size)
            if dim != 1:
                a, b = a.movedim(dim, 1), b.movedim(dim, 1)
            accs[g][i].update(a, b)

    modes = [(m, m.training) for m in (*model_a.modules(), *model_b.modules())]
    model_a.eval()
    model_b.eval()
    images = 0
    try:
        for batch in tqdm(data, desc="align", unit="batch", disable=not progress, leave=False):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x.to(device)
            for chunk in x.split(max(1, -(-x.shape[0] // micro_batches))):
                runner.run(chunk, on_tap)
            images += x.shape[0]
    finally:
        for m, flag in modes:
            m.training = flag
    if images == 0:
        raise DataError("alignment data is empty")
    return CorrelationStats(accs, images)


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

    "Before" is the identity matching. Groups without taps keep the identity.
    """
    perms = {
        g: solve_lap(stats.correlation(g).cpu())
        if g in stats.accumulators
        else torch.arange(grp.size)
        for g, grp in spec.groups.items()
    }
    before, after = correlation_of(stats, spec, perms)
    return perms, before, after
