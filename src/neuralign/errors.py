"""Typed exceptions of neuralign.

Every error the library raises on bad input derives from :class:`NeuralignError`, so callers
(and the CLI, which turns them into a one-line message and exit code 2) can catch them all.
Messages name the problem and the fix.
"""

from __future__ import annotations


class NeuralignError(Exception):
    """Base class of every error neuralign raises on bad input or state."""


class DataError(NeuralignError, ValueError):
    """A dataset is missing, truncated, corrupt, or unsafe to read."""


class ConfigError(NeuralignError, ValueError):
    """A configuration value or argument is out of range or of the wrong type."""


class CheckpointError(NeuralignError, ValueError):
    """A checkpoint is missing, corrupt, unsafe, or does not fit the model."""


class DivergedError(ConfigError):
    """Training produced a non-finite loss or weights (the settings make it diverge)."""


class ModelMismatchError(NeuralignError, ValueError):
    """Models that must share an architecture (endpoints of a path, a pair to align) do not."""


class UnsupportedOpError(NeuralignError):
    """Permutation discovery met an operation it cannot reason about."""


class SpecVerificationError(NeuralignError):
    """A permutation spec does not leave the network's function unchanged."""
