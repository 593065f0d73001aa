"""Data-parallel helpers: ``torchrun`` detection, collectives, rank-0-only side effects.

neuralign runs unchanged under ``torchrun --nproc_per_node N`` (and its multi-node
arguments). The launcher sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``MASTER_ADDR``/``MASTER_PORT``; :func:`init_from_env` reads them once (the CLI calls it at
start) and joins the process group: NCCL when CUDA is available (each process then owns
``cuda:LOCAL_RANK``), gloo otherwise.

Every helper is a no-op in a single process, so library code calls them unconditionally:

* :func:`is_distributed`, :func:`rank`, :func:`world_size`, :func:`is_main`;
* :func:`barrier`, :func:`all_reduce_`, :func:`all_reduce_sum`, :func:`broadcast_`,
  :func:`all_reduce_gradients_` (average the ``.grad`` of parameters, one flat buffer);
* :func:`on_main`: run a side effect (a checkpoint, a log file, a report) on rank 0 only,
  between barriers, so no rank reads a half-written file or races past a resume check;
* :func:`shard_batches`: every ``world_size``-th batch of an iterable that every rank
  iterates identically (evaluation, BatchNorm recomputation, alignment statistics).

Collectives must be called in the same order on every rank: a function that reduces
(e.g. :func:`neuralign.paths.evaluate_state` in a distributed run) must be called by every
rank, never inside an ``if is_main():`` block.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "all_reduce_",
    "all_reduce_gradients_",
    "all_reduce_sum",
    "average_",
    "barrier",
    "broadcast_",
    "comm_device",
    "device_for_rank",
    "env_world_size",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_rank",
    "on_main",
    "rank",
    "shard_batches",
    "world_size",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset): what a launcher asked for."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 outside a distributed run)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 outside a distributed run)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its node (``LOCAL_RANK``; 0 when unset)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return rank() == 0


def device_for_rank() -> torch.device | None:
    """``cuda:LOCAL_RANK`` in a distributed CUDA run, else None (use the default choice)."""
    if is_distributed() and torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return None


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by the ``torchrun`` environment, once.

    Does nothing (returns False) when ``WORLD_SIZE`` is unset or 1, or when the group is
    already initialised. With CUDA the process binds ``cuda:LOCAL_RANK`` first, so
    ``torch.device("cuda")`` means this process's GPU; non-zero ranks log warnings only.

    Args:
        backend: ``"nccl"`` / ``"gloo"``; default NCCL with CUDA, gloo otherwise.
        timeout_s: Collective timeout.

    Returns:
        True when this call initialised a multi-process group.
    """
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    if not is_main():
        logging.getLogger("neuralign").setLevel(logging.WARNING)
    logger.info("distributed: rank %d of %d (%s)", rank(), world_size(), backend)
    return True


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place across ranks (``"sum"``, ``"max"``, ``"min"``); return it."""
    if is_distributed():
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def comm_device() -> torch.device:
    """Where small host values must live for a collective (the GPU with NCCL, else CPU)."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum Python numbers across ranks in float64 (one collective); return them as floats."""
    if not is_distributed():
        return [float(v) for v in values]
    buf = torch.tensor([float(v) for v in values], dtype=torch.float64, device=comm_device())
    all_reduce_(buf)
    return [float(v) for v in buf.tolist()]


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape on all ranks), in rank order; ``[tensor]`` alone."""
    if not is_distributed():
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(out, tensor.contiguous())
    return out


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s values; return it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def average_(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The mean of each tensor over ranks, with one flat all-reduce (inputs are unchanged)."""
    if not is_distributed() or not tensors:
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    all_reduce_(flat)
    flat.div_(world_size())
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def all_reduce_gradients_(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` across ranks with one flat all-reduce.

    A parameter without a gradient on this rank contributes zeros (and gets the average).
    This is what ``DistributedDataParallel`` does for a module; it is used where the
    trainable tensors are not a module's parameters in its forward (the control points of
    a curve, evaluated through ``functional_call``; PAM's relaxed permutation matrices).
    """
    if not is_distributed():
        return
    plist = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in plist]
    for p, g in zip(plist, average_(grads), strict=True):
        p.grad = g


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run ``fn(*args, **kwargs)`` on rank 0 only, between two barriers; others get None.

    The first barrier guarantees every rank has passed the code before this point (e.g. a
    resume check reading the file ``fn`` writes); the second that the effect is visible to
    all ranks afterwards. In a single process it simply calls ``fn``.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    barrier()
    try:
        out = fn(*args, **kwargs) if is_main() else None
    finally:
        barrier()
    return out


def shard_batches(data: Iterable[T], *, limit: int | None = None) -> Iterator[T]:
    """This rank's share of ``data``: the batches ``i`` with ``i % world_size == rank``.

    Every rank iterates ``data`` completely (so seeded augmentation draws stay in step) and
    keeps its own batches; with ``limit`` only the first ``limit`` batches count. In a
    single process this yields every batch (up to ``limit``).
    """
    n, r = world_size(), rank()
    for i, batch in enumerate(data):
        if limit is not None and i >= limit:
            break
        if i % n == r:
            yield batch
