"""Loss and accuracy of a model (or of a functional state) over a data iterable."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from neuralign import distributed as dist_
from neuralign.models.common import split_logits


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    state: dict[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    distributed: bool | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (in %) of ``model`` in eval mode over ``data``.

    In a distributed run (``distributed=None``: whenever a multi-process group is
    initialised) every rank must pass the same ``data``: each evaluates every
    ``world_size``-th batch (:func:`neuralign.distributed.shard_batches`) and the loss sum,
    correct count and sample count are all-reduced, so every rank returns the
    single-process result. Pass ``distributed=False`` when only one rank evaluates.

    Args:
        model: the architecture; its train/eval mode is restored afterwards.
        data: iterable of ``(x, y)`` batches.
        state: optional state dict evaluated through ``torch.func.functional_call``
            instead of the module's own weights.
        device: where to run; defaults to the model's device.
        distributed: shard and reduce across ranks (default: when distributed).
    """
    shard = dist_.is_distributed() if distributed is None else distributed
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for x, y in dist_.shard_batches(data) if shard else data:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if state is None:
                out = model(x)
            else:
                out = torch.func.functional_call(model, state, (x,), strict=True)
            logits, _ = split_logits(out)
            total_loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            count += y.numel()
    finally:
        model.train(was_training)
    if shard:
        totals = dist_.all_reduce_(torch.stack([total_loss, correct.double(), count.double()]))
        total_loss, correct, count = totals[0], totals[1], totals[2]
    n = int(count)
    if n == 0:
        from neuralign.errors import DataError

        raise DataError("evaluation data is empty")
    return float(total_loss) / n, 100.0 * float(correct) / n
