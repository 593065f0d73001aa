"""Endpoint training, schedules, losses and evaluation."""

from neuralign.optim.schedules import SCHEDULES, lr_at
from neuralign.training.evaluate import evaluate_model
from neuralign.training.losses import classification_loss
from neuralign.training.train import Attack, TrainConfig, TrainResult, train_model

__all__ = [
    "SCHEDULES",
    "Attack",
    "TrainConfig",
    "TrainResult",
    "classification_loss",
    "evaluate_model",
    "lr_at",
    "train_model",
]
