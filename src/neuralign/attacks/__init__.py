"""Adversarial attacks (PGD, Madry et al. 2018) and helpers for robust training and alignment."""

from neuralign.attacks.pgd import PGD, PGD_PRESETS, AdversarialBatches, PGDPreset, alignment_batches

__all__ = ["PGD", "PGD_PRESETS", "AdversarialBatches", "PGDPreset", "alignment_batches"]
