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
from neuralign.io.outputs import check_not_input, checkpoint_out_path, safe_component
from neuralign.io.resume import ResumeMismatchError, check_resume
from neuralign.io.runlock import RunLock, RunLockedError, run_lock

__all__ = [
    "ArtefactProblem",
    "DiskFullError",
    "ResumeMismatchError",
    "RunLock",
    "RunLockedError",
    "check_not_input",
    "check_resume",
    "checkpoint_out_path",
    "record_artefacts",
    "run_lock",
    "safe_component",
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
