"""Adversarial attacks (PGD, Madry et al. 2018) and helpers for robust training and alignment."""

from neuralign.attacks.pgd import (
    PGD,
    PGD_PRESETS,
    TRAINING_MODE,
    AdversarialBatches,
    PGDPreset,
    adversarial_training,
    alignment_batches,
)

__all__ = [
    "PGD",
    "PGD_PRESETS",
    "TRAINING_MODE",
    "AdversarialBatches",
    "PGDPreset",
    "adversarial_training",
    "alignment_batches",
]
