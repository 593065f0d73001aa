"""One resumable epoch loop, shared by endpoint, curve and P-step training.

A trainer supplies three things:

* ``train_epoch(epoch) -> record``: one pass over its data (0-based ``epoch``), returning
  that epoch's metrics (a JSON-serialisable dict);
* ``save_state(done, history) -> payload``: everything needed to continue after ``done``
  completed epochs (weights or control points, optimizer and RNG state, ...);
* ``load_state(payload) -> (done, history)``: restores that state.

:func:`run_epochs` then owns what the three trainers used to repeat: resuming from the
checkpoint file when it exists, the epoch range and progress bar, writing the checkpoint
atomically on rank 0 after every epoch (then the trainer's own published files), the
barrier that keeps the other ranks from running ahead, and restoring every module's
train/eval flag. A run killed after any epoch and started again ends with exactly the state
of an uninterrupted one, provided ``train_epoch`` depends only on the epoch and the restored
state (seeded generators, ``set_epoch`` data order).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from neuralign import distributed as dist_
from neuralign.errors import CheckpointError
from neuralign.io.atomic import atomic_path

__all__ = [
    "EpochRun",
    "amp_autocast",
    "get_rng_state",
    "read_state",
    "restore_modes",
    "run_epochs",
    "set_rng_state",
    "write_state",
]

logger = logging.getLogger(__name__)

Record = dict[str, Any]


@dataclass
class EpochRun:
    """Outcome of :func:`run_epochs`.

    Attributes:
        history: One record per completed epoch, including epochs done before a resume.
        resumed_from: Completed epochs found in the checkpoint, or ``None`` (fresh start).
    """

    history: list[Record] = field(default_factory=list)
    resumed_from: int | None = None


def read_state(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a training-state file written by :func:`write_state` (weights-only unpickling).

    Raises:
        CheckpointError: When the file cannot be read or is not a dict.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(
            f"{path}: unreadable training state ({type(exc).__name__}: {exc}); delete it to "
            "restart from scratch"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a neuralign training state; delete it to restart")
    return payload


def write_state(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with :func:`torch.save`, atomically (no partial file on a kill)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def get_rng_state() -> dict[str, Any]:
    """The global torch RNG state (CPU, and every CUDA device when available)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`get_rng_state`'s result."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def amp_autocast(device: torch.device, amp: bool) -> Callable[[], Any]:
    """A context factory: bf16 autocast on CUDA when ``amp``, else a no-op."""
    if amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


@contextlib.contextmanager
def restore_modes(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Restore the train/eval flag of every submodule of ``modules`` on exit."""
    flags = {m: m.training for root in modules for m in root.modules()}
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def run_epochs(
    train_epoch: Callable[[int], Record],
    epochs: int,
    *,
    checkpoint: Path | None = None,
    save_state: Callable[[int, list[Record]], dict[str, Any]] | None = None,
    load_state: Callable[[dict[str, Any]], tuple[int, list[Record]]] | None = None,
    publish: Callable[[int, list[Record]], None] | None = None,
    modules: Iterable[nn.Module] = (),
    desc: str = "train",
    progress: bool = True,
    postfix: Callable[[Record], dict[str, str]] | None = None,
    leave: bool = True,
    state: Callable[[], Mapping[str, torch.Tensor]] | None = None,
) -> EpochRun:
    """Run epochs ``[done, epochs)``, resuming from and checkpointing to ``checkpoint``.

    Args:
        train_epoch: Trains one epoch (0-based index) and returns its record.
        epochs: Total number of epochs, including those done before a resume.
        checkpoint: The training-state file; when it exists the run resumes from it.
        save_state: ``(done, history) -> payload`` written to ``checkpoint`` after every
            epoch (required with ``checkpoint``).
        load_state: ``payload -> (done, history)``: restores the trainer's state (required
            with ``checkpoint``).
        publish: Called on rank 0 after the checkpoint is written, every epoch, e.g. to
            write the published model and the metrics log (the checkpoint must be enough to
            regenerate what it writes: a kill may fall between the two).
        modules: Modules whose train/eval flags are restored afterwards.
        desc: Progress-bar label.
        progress: Show the progress bar (rank 0 only).
        postfix: Progress-bar fields from an epoch's record.
        leave: Keep the finished progress bar on screen.
        state: Tensors the epoch updates beyond ``modules``' parameters (PAM's relaxed
            permutation matrices), checked for NaN/Inf with them.

    After every epoch, before anything is written, the record's loss (``loss``,
    ``train_loss``, ``objective``) and the floating-point parameters of ``modules`` (and
    ``state``) must be finite, else :class:`~neuralign.errors.DivergedError` stops the run
    with one line (docs/reliability.md, "Divergence and mismatched models"): nothing
    non-finite is ever saved.

    Returns:
        The :class:`EpochRun` (history and where it resumed from).
    """
    run = EpochRun()
    done = 0
    if checkpoint is not None:
        if save_state is None or load_state is None:
            raise ValueError("run_epochs: a checkpoint needs save_state and load_state")
        if checkpoint.exists():
            done, history = load_state(read_state(checkpoint))
            run.history = list(history)[:done]
            run.resumed_from = done
            logger.info("%s: resuming from %s after %d epochs", desc, checkpoint, done)
    with restore_modes(modules):
        bar = tqdm(
            range(done, epochs),
            total=epochs,
            initial=done,
            desc=desc,
            unit="epoch",
            disable=not (progress and dist_.is_main()),
            leave=leave,
        )
        for epoch in bar:
            record = train_epoch(epoch)
            _check_finite(record, modules, state, desc, epoch + 1)
            run.history.append(record)
            if postfix is not None:
                bar.set_postfix(postfix(record))
            logger.info("%s epoch %d: %s", desc, epoch + 1, record)
            if checkpoint is not None or publish is not None:
                dist_.on_main(_write_epoch, checkpoint, save_state, publish, epoch + 1, run.history)
        bar.close()
    dist_.barrier()  # rank 0's files are complete before any rank goes on
    return run


_LOSS_KEYS = ("loss", "train_loss", "objective")


def _check_finite(
    record: Record,
    modules: Iterable[nn.Module],
    state: Callable[[], Mapping[str, torch.Tensor]] | None,
    desc: str,
    epoch: int,
) -> None:
    from neuralign.checks import check_finite_loss, check_finite_state

    for key in _LOSS_KEYS:
        value = record.get(key)
        if isinstance(value, (int, float)):
            check_finite_loss(value, desc, epoch=epoch)
    tensors: dict[str, torch.Tensor] = {}
    for i, m in enumerate(modules):
        tensors.update({f"{i}.{k}": p.detach() for k, p in m.named_parameters()})
    if state is not None:
        tensors.update({f"state.{k}": v.detach() for k, v in state().items()})
    check_finite_state(tensors, desc, epoch=epoch)


def _write_epoch(
    checkpoint: Path | None,
    save_state: Callable[[int, list[Record]], dict[str, Any]] | None,
    publish: Callable[[int, list[Record]], None] | None,
    done: int,
    history: list[Record],
) -> None:
    """Rank 0's writes after an epoch: the resume state first, then the published files."""
    if checkpoint is not None and save_state is not None:
        write_state(checkpoint, save_state(done, history))
    if publish is not None:
        publish(done, history)
