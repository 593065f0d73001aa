"""Optimisation building blocks shared by endpoint, curve and P-step training (floor 1).

* :func:`lr_at`: learning-rate schedules as pure functions of the epoch.
"""

from neuralign.optim.schedules import SCHEDULES, lr_at

__all__ = ["SCHEDULES", "lr_at"]
