"""Checkpoints, atomic file writes, run-folder locks and artefact integrity records."""

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
from neuralign.io.integrity import (
    ArtefactProblem,
    record_artefacts,
    verify_artefacts,
)
from neuralign.io.runlock import RunLock, RunLockedError, run_lock

__all__ = [
    "ArtefactProblem",
    "DiskFullError",
    "RunLock",
    "RunLockedError",
    "record_artefacts",
    "run_lock",
    "verify_artefacts",
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
