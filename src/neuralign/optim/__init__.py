"""Optimisation building blocks shared by endpoint, curve and P-step training (floor 1).

* :func:`lr_at`: learning-rate schedules as pure functions of the epoch;
  :func:`set_epoch_lr` applies one to an optimiser at the start of an epoch.
"""

from neuralign.optim.schedules import SCHEDULES, lr_at, set_epoch_lr

__all__ = ["SCHEDULES", "lr_at", "set_epoch_lr"]
