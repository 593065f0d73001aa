"""PAM's checkpoint folder, kept apart from the algorithm.

Layout of a folder (every file written atomically, on rank 0)::

    pam_run.json                 settings fingerprint (a folder serves one run)
    start_permutation.json       where PAM started
    outer{k}/p_step_state.pt     the P-step's relaxation, after every P-step epoch
    outer{k}/p_step.json         the rounded permutation and the P-step's record
    outer{k}/psi/                the ψ-step's train_curve checkpoint and curve
    outer{k}/done.json           outer iteration k finished
    curve.safetensors, permutation.json, pam.json   the final result

:class:`PAMFolder` with ``root=None`` is a no-op folder (nothing saved, nothing resumed), so
the algorithm reads the same either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neuralign import distributed as dist_
from neuralign.curves.bezier import Bezier
from neuralign.errors import CheckpointError
from neuralign.io.atomic import atomic_write_text
from neuralign.pamopt.results import PAMStep
from neuralign.perm import Permutation

__all__ = ["PAMFolder"]


def _perm_to_json(perm: Permutation) -> dict[str, list[int]]:
    return {g: p.tolist() for g, p in perm.perms.items()}


def _perm_from_json(d: Mapping[str, Any]) -> Permutation:
    return Permutation({g: torch.tensor(v) for g, v in d.items()})


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically on rank 0 (others wait at a barrier)."""
    dist_.on_main(lambda: atomic_write_text(path, json.dumps(obj, indent=1) + "\n"))


class PAMFolder:
    """Save and resume points of one PAM run (``root=None``: nothing is saved)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None

    def claim(self, fingerprint: Mapping[str, Any]) -> None:
        """Tie the folder to these settings (``CheckpointError`` if it holds another run)."""
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        run_file = self.root / "pam_run.json"
        if run_file.exists():
            if json.loads(run_file.read_text()) != dict(fingerprint):
                raise CheckpointError(
                    f"{self.root} holds a PAM run with other settings; use another folder or "
                    "delete it"
                )
        else:
            write_json(run_file, dict(fingerprint))

    # ---- the starting permutation
    def load_start(self) -> Permutation | None:
        f = self.root / "start_permutation.json" if self.root is not None else None
        return Permutation.load(f) if f is not None and f.exists() else None

    def save_start(self, perm: Permutation) -> None:
        if self.root is not None:
            f = self.root / "start_permutation.json"
            if not f.exists():
                dist_.on_main(lambda: perm.save(f))

    # ---- one outer iteration
    def _outer(self, k: int) -> Path | None:
        if self.root is None:
            return None
        d = self.root / f"outer{k}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def p_state(self, k: int) -> Path | None:
        """The P-step's resume file of outer iteration ``k``."""
        d = self._outer(k)
        return d / "p_step_state.pt" if d is not None else None

    def psi_dir(self, k: int) -> Path | None:
        """The ψ-step's ``train_curve`` checkpoint folder of outer iteration ``k``."""
        d = self._outer(k)
        return d / "psi" if d is not None else None

    def load_rounding(self, k: int) -> tuple[Permutation, dict[str, Any], dict[str, float]] | None:
        """The rounded permutation, the P-step's record and its timings, when saved."""
        d = self._outer(k)
        if d is None or not (d / "p_step.json").exists():
            return None
        rec = json.loads((d / "p_step.json").read_text())
        return _perm_from_json(rec["permutation"]), rec["fields"], rec["seconds"]

    def save_rounding(
        self, k: int, perm: Permutation, fields: Mapping[str, Any], seconds: Mapping[str, float]
    ) -> None:
        d = self._outer(k)
        if d is not None:
            rec = {"permutation": _perm_to_json(perm), "fields": fields, "seconds": seconds}
            write_json(d / "p_step.json", rec)

    def load_outer(self, k: int, arch: nn.Module) -> tuple[PAMStep, Permutation, Bezier] | None:
        """A finished outer iteration: its record, permutation and trained curve."""
        d = self._outer(k)
        if d is None or not (d / "done.json").exists():
            return None
        rec = json.loads((d / "done.json").read_text())
        curve = Bezier.load(d / "psi" / "curve.safetensors", arch)
        assert isinstance(curve, Bezier)
        return PAMStep(**rec["step"]), _perm_from_json(rec["permutation"]), curve

    def save_outer(self, k: int, step: PAMStep, perm: Permutation) -> None:
        d = self._outer(k)
        if d is not None:
            rec = {"step": dataclasses.asdict(step), "permutation": _perm_to_json(perm)}
            write_json(d / "done.json", rec)

    # ---- the result
    def finish(self, curve: Bezier, perm: Permutation, summary: Mapping[str, Any]) -> None:
        if self.root is None:
            return
        root = self.root
        dist_.on_main(lambda: curve.save(root / "curve.safetensors"))
        dist_.on_main(lambda: perm.save(root / "permutation.json"))
        write_json(root / "pam.json", dict(summary))
