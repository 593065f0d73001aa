"""Learning-rate schedules as pure functions of the (0-based) epoch.

* ``step``: the paper's endpoint and curve schedule (Tatro et al. 2020; docs/method.md, Endpoint training):
  ``lr * gamma ** (epoch // step)`` (default ×0.5 every 20 epochs).
* ``robust``: the adversarial-training schedule (Tatro et al. 2020; docs/method.md, Robustness): constant to 50% of the
  epochs, then linear decay to 0.01× by 90%, then constant.
* ``cosine`` and ``constant``.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from neuralign.errors import ConfigError

SCHEDULES = ("step", "cosine", "constant", "robust")


def lr_at(
    epoch: int,
    *,
    base_lr: float,
    epochs: int,
    schedule: str = "step",
    step: int = 20,
    gamma: float = 0.5,
) -> float:
    """Learning rate to use during ``epoch`` (0-based) of ``epochs``."""
    if schedule == "step":
        if step <= 0:
            raise ConfigError(f"lr step must be a positive number of epochs, got {step}")
        return base_lr * gamma ** (epoch // step)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
    if schedule == "constant":
        return base_lr
    if schedule == "robust":
        frac = epoch / max(1, epochs)
        if frac < 0.5:
            return base_lr
        if frac < 0.9:
            return base_lr * (1.0 - (frac - 0.5) / 0.4 * 0.99)
        return base_lr * 0.01
    raise ConfigError(f"unknown lr schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


class ScheduleConfig(Protocol):
    """The schedule fields every training config has (TrainConfig, CurveTrainConfig)."""

    # read-only members: frozen dataclasses (CurveTrainConfig) satisfy the protocol too
    @property
    def lr(self) -> float: ...
    @property
    def epochs(self) -> int: ...
    @property
    def schedule(self) -> str: ...
    @property
    def lr_step(self) -> int: ...
    @property
    def lr_gamma(self) -> float: ...


def set_epoch_lr(optimizer: torch.optim.Optimizer, epoch: int, cfg: ScheduleConfig) -> float:
    """Set every parameter group's learning rate for ``epoch`` from ``cfg``; return it."""
    lr = lr_at(
        epoch,
        base_lr=cfg.lr,
        epochs=cfg.epochs,
        schedule=cfg.schedule,
        step=cfg.lr_step,
        gamma=cfg.lr_gamma,
    )
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
