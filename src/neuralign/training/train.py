"""Endpoint training (Tatro et al. 2020; docs/method.md, Endpoint training): SGD with momentum and the paper's step schedule.

Deterministic for a given seed on CPU: the data order and augmentation are drawn from
``torch.Generator`` seeded by (seed, epoch), and the global RNG state (dropout) is saved in
every checkpoint, so a run interrupted after any epoch and resumed ends with exactly the
weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralign import distributed as dist_
from neuralign.checks import check_model_fits_data, check_training_data
from neuralign.data import Dataset, TensorLoader, default_augment
from neuralign.device import select_device
from neuralign.errors import CheckpointError, ConfigError
from neuralign.io.atomic import atomic_write_text
from neuralign.io.checkpoint import (
    check_state_dict,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from neuralign.optim.runner import amp_autocast, run_epochs
from neuralign.optim.schedules import set_epoch_lr
from neuralign.ranges import MAX_BATCH, MAX_EPOCHS, MAX_SEED, check_ranges, ranged
from neuralign.training.batches import UserBatches, as_user_batches
from neuralign.training.evaluate import evaluate_model
from neuralign.training.losses import classification_loss

logger = logging.getLogger(__name__)

#: ``attack(model, x, y) -> x_adv``: crafts training inputs (adversarial training).
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters of endpoint training (defaults: the paper's, docs/method.md)."""

    # Ranges (neuralign.ranges): upper bounds where time or memory grows with the value; lr
    # has none (a diverging lr is stopped by DivergedError, docs/reliability.md).
    epochs: int = ranged(250, 1, MAX_EPOCHS)  # number of passes over the training set
    batch_size: int = ranged(
        128, 1, MAX_BATCH
    )  # minibatch size (paper: 64 for TinyTen on CIFAR-10)
    lr: float = ranged(0.1, 0, lo_open=True)  # initial learning rate
    momentum: float = ranged(0.9, 0, 1, hi_open=True)  # SGD momentum
    weight_decay: float = ranged(5e-4, 0, 1)  # L2 weight decay
    schedule: str = "step"  # step | cosine | constant | robust
    lr_step: int = ranged(20, 1, MAX_EPOCHS)  # epochs between decays of the step schedule
    lr_gamma: float = ranged(0.5, 0, 1, lo_open=True)  # decay factor of the step schedule
    augment: bool = True  # random crop (pad 4), flip, rotation ±15° (docs/method.md)
    aux_weight: float = ranged(0.3, 0, 100)  # weight of auxiliary heads' losses (GoogLeNet)
    seed: int = ranged(0, 0, MAX_SEED)  # data order, augmentation and dropout
    amp: bool = True  # bf16 autocast + channels-last on CUDA (ignored elsewhere)
    compile: bool = False  # torch.compile the model (GPU fast path; compiling takes a while)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        from neuralign.optim.schedules import SCHEDULES

        check_ranges(self)
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"schedule: must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`."""

    history: list[dict[str, Any]] = field(default_factory=list)
    test_loss: float | None = None
    test_acc: float | None = None
    checkpoint: Path | None = None
    resumed_from_epoch: int = 0


def _parallel_model(model: nn.Module, device: torch.device, compile: bool) -> nn.Module:
    """What the training loop calls: ``model``, wrapped in DDP when distributed, compiled.

    ``DistributedDataParallel`` broadcasts rank 0's weights at construction and averages
    gradients during the backward pass (overlapping the all-reduce with it). BatchNorm
    layers keep per-rank batch statistics (convert with ``nn.SyncBatchNorm`` for global
    ones); DDP re-broadcasts rank 0's buffers (running statistics) before each forward.
    The returned module shares parameters with ``model``, whose state dict stays unprefixed.
    """
    net: nn.Module = model
    if dist_.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        net = DistributedDataParallel(model, device_ids=ids)
    if compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return net


def train_model(
    model: nn.Module,
    train_data: Dataset | Iterable[Any],
    test_data: Dataset | Iterable[Any] | None = None,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    attack: Attack | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place with SGD; checkpoint and resume through ``out_dir``.

    Under ``torchrun`` (a process group initialised, e.g. by the CLI through
    :func:`neuralign.distributed.init_from_env`) the model is wrapped in
    ``DistributedDataParallel``; ``config.batch_size`` is the *global* batch, each rank
    loading its ``batch_size / world_size`` slice of every global batch
    (:class:`~neuralign.data.TensorLoader` sharding, incomplete last global batch dropped),
    so with a mean loss ``N`` processes follow the single-process run (exactly, up to float
    rounding, for models without BatchNorm or dropout: BatchNorm uses per-rank batch
    statistics, dropout per-rank masks). Metrics are all-reduced, test evaluation is
    sharded, and only rank 0 writes ``out_dir``.

    Args:
        model: the network (from :func:`neuralign.create_model` or any module).
        train_data: training set; batches are augmented per ``config.augment``. Or any
            re-iterable of ``(x, y)`` batches, e.g. a ``torch.utils.data.DataLoader``
            (see :mod:`neuralign.training.batches`: your loader then shuffles and augments).
        test_data: evaluated after every epoch when given (a Dataset or batches).
        config: hyper-parameters (:class:`TrainConfig`).
        out_dir: when given, ``model.safetensors`` (weights + metadata), ``trainer.pt``
            (optimizer and RNG state) and ``metrics.jsonl`` are written there after every
            epoch, atomically; an existing run there is resumed.
        device: ``cpu``/``cuda``/``mps``; auto-selected when None.
        progress: show a progress bar.
        attack: adversarial training: the model is trained on ``attack(model, x, y)`` only.
        metadata: extra JSON metadata stored in the checkpoint (dataset name, ...).

    Returns:
        A :class:`TrainResult` with the per-epoch history. The model is left in the
        train/eval mode it came in.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    dev = select_device(device)
    was_training = model.training
    user_train = as_user_batches(train_data, dev, "train_data")
    user_test = as_user_batches(test_data, dev, "test_data") if test_data is not None else None
    if user_train is None:
        assert isinstance(train_data, Dataset)
        check_training_data(train_data)
        check_model_fits_data(model, train_data)
    elif dist_.world_size() > 1:
        raise ConfigError("distributed training needs a neuralign Dataset, not your own batches")
    if isinstance(test_data, Dataset):
        check_model_fits_data(model, test_data)
    use_amp = cfg.amp and dev.type == "cuda"
    model.to(dev)
    if use_amp:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    world = dist_.world_size()
    if cfg.batch_size % world:
        raise ConfigError(
            f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
            f"number of processes {world}"
        )
    net = _parallel_model(model, dev, cfg.compile)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    loader: TensorLoader | UserBatches
    if user_train is not None:
        loader = user_train
    else:
        assert isinstance(train_data, Dataset)
        loader = TensorLoader(
            train_data,
            batch_size=cfg.batch_size // world,
            shuffle=True,
            augment=default_augment(train_data) if cfg.augment else None,
            device=dev,
            seed=cfg.seed,
            drop_last=world > 1,
            rank=dist_.rank(),
            world_size=world,
        )
    test_loader: TensorLoader | UserBatches | None = user_test
    if isinstance(test_data, Dataset):
        test_loader = TensorLoader(test_data, batch_size=max(256, cfg.batch_size), device=dev)
    result = TrainResult()
    base_meta = dict(metadata or {})
    base_meta.update({"seed": cfg.seed, "train_config": cfg.__dict__})
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "model.safetensors" if out else None
    trainer_file = out / "trainer.pt" if out else None
    metrics_file = out / "metrics.jsonl" if out else None
    autocast = amp_autocast(dev, cfg.amp)

    def train_epoch(epoch: int) -> dict[str, Any]:
        lr = set_epoch_lr(optimizer, epoch, cfg)
        loader.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        correct = torch.zeros((), device=dev, dtype=torch.int64)
        seen = 0
        for x, y in loader:
            if use_amp:
                x = x.contiguous(memory_format=torch.channels_last)
            if attack is not None:
                x = attack(model, x, y)
                model.train()
            with autocast():
                out_ = net(x)
                loss, logits = classification_loss(out_, y, cfg.aux_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
        if world > 1:  # one collective per epoch: loss sum, correct, count
            totals = dist_.all_reduce_(
                torch.stack([loss_sum, correct.double(), loss_sum.new_tensor(seen)])
            )
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
        train_loss = float(loss_sum) / seen
        if not torch.isfinite(torch.tensor(train_loss)):
            raise ConfigError(
                f"training diverged at epoch {epoch} (loss {train_loss}); lower the learning rate"
            )
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": 100.0 * float(correct) / seen,
            "time": time.perf_counter() - t0,
        }
        if test_loader is not None:
            row["test_loss"], row["test_acc"] = evaluate_model(model, test_loader, device=dev)
            result.test_loss, result.test_acc = row["test_loss"], row["test_acc"]
        return row

    # trainer.pt is the resume point: written first each epoch and holding the weights, so a
    # kill between it and model.safetensors loses nothing (a resume republishes).
    def save_state(done: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": done - 1,  # the last completed epoch (0-based)
            "history": history,
        }

    def load_state(tstate: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        return _resume(tstate, model, optimizer, trainer_file, ckpt, metrics_file, base_meta)

    def publish(done: int, history: list[dict[str, Any]]) -> None:
        if ckpt and metrics_file:
            save_checkpoint(ckpt, model, dict(base_meta, epoch=done - 1, metrics=history[-1]))
            atomic_write_text(metrics_file, "".join(json.dumps(r) + "\n" for r in history))

    if not (trainer_file and trainer_file.exists()):
        torch.manual_seed(cfg.seed)
    run = run_epochs(
        train_epoch,
        cfg.epochs,
        checkpoint=trainer_file,
        save_state=save_state,
        load_state=load_state,
        publish=publish if out else None,
        desc="train",
        progress=progress,
        postfix=lambda r: {
            "loss": f"{r['train_loss']:.3f}",
            "acc": f"{r.get('test_acc', r['train_acc']):.1f}",
        },
        leave=False,
    )
    result.history = run.history
    result.resumed_from_epoch = run.resumed_from or 0
    if out:
        logger.info("%s: %d epochs done", out, len(run.history))
    if test_loader is not None and result.test_acc is None:  # resumed a finished run
        result.test_loss, result.test_acc = evaluate_model(model, test_loader, device=dev)
    if out and ckpt:
        result.checkpoint = ckpt
    model.train(was_training)
    return result


def _resume(
    tstate: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_file: Path | None,
    ckpt: Path | None,
    metrics_file: Path | None,
    base_meta: dict[str, Any],
) -> tuple[int, list[dict[str, Any]]]:
    """Restore ``trainer.pt``'s state; bring the published checkpoint and log up to date."""
    if not {"optimizer", "rng", "epoch"} <= set(tstate):
        raise CheckpointError(
            f"{trainer_file} is not a neuralign training state; delete it to restart"
        )
    dev = next(iter(model.parameters())).device
    if "model" in tstate:
        check_state_dict(model, tstate["model"], str(trainer_file))
        model.load_state_dict(tstate["model"])
    elif ckpt and ckpt.exists():  # written by an older version: weights live in ckpt
        state, _ = load_checkpoint(ckpt, device=dev)
        model.load_state_dict(state)
    else:
        raise CheckpointError(f"{trainer_file} has no weights and {ckpt} is missing")
    optimizer.load_state_dict(tstate["optimizer"])
    torch.set_rng_state(tstate["rng"].cpu())
    start_epoch = int(tstate["epoch"]) + 1
    history: list[dict[str, Any]] = []
    if "history" in tstate:
        history = [dict(r) for r in tstate["history"]][:start_epoch]
    elif metrics_file and metrics_file.exists():
        history = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
        history = history[:start_epoch]
    if ckpt and metrics_file and start_epoch > 0 and history and dist_.is_main():
        meta_now = read_metadata(ckpt) if ckpt.exists() else {}
        if meta_now.get("epoch") != start_epoch - 1:
            save_checkpoint(
                ckpt, model, dict(base_meta, epoch=start_epoch - 1, metrics=history[-1])
            )
        atomic_write_text(metrics_file, "".join(json.dumps(r) + "\n" for r in history))
    logger.info("resuming %s from epoch %d", trainer_file, start_epoch)
    return start_epoch, history
