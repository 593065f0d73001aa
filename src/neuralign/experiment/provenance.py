"""What produced a run: package versions, the source revision, the device and the seeds."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from neuralign._version import __version__
from neuralign.experiment.config import ExperimentConfig

__all__ = ["git_revision", "provenance"]


def git_revision(where: str | Path | None = None) -> str | None:
    """The git commit SHA of the checkout holding ``where`` (default: this package), with
    ``-dirty`` when it has uncommitted changes; ``None`` outside a git checkout or without
    git (an installed wheel)."""
    cwd = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = sha.stdout.strip()
    if not rev:
        return None
    return rev + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def provenance(cfg: ExperimentConfig, device: torch.device) -> dict[str, Any]:
    """Versions, source revision, device and seeds, for the report."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    info: dict[str, Any] = {"neuralign": __version__}
    rev = git_revision()
    if rev:
        info["git"] = rev
    info.update(
        {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": f"{device.type} ({name})",
            "threads": torch.get_num_threads(),
            "seeds": cfg.endpoints.seeds,
            "pairs": cfg.pairs,
            "dataset": cfg.data.dataset,
            "arch": cfg.model.arch,
        }
    )
    return info
