"""Checkpoints and atomic file writes."""

from neuralign.io.atomic import (
    DiskFullError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
)
from neuralign.io.checkpoint import (
    check_state_dict,
    load_checkpoint,
    load_model,
    read_metadata,
    save_checkpoint,
)

__all__ = [
    "DiskFullError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temporaries",
    "check_state_dict",
    "load_checkpoint",
    "load_model",
    "read_metadata",
    "save_checkpoint",
]
