"""The run folder of ``neuralign run``: where every artefact lives, and its stage markers.

Layout::

    config.toml                 the experiment's config (guards against mixing configs)
    spec.json                   the discovered permutation spec
    timings.json                wall time per stage
    endpoints/seed{S}/          model.safetensors, trainer.pt, metrics.jsonl, done.json
    align/pair{I}/{method}.json permutation + per-group correlations; {method}.safetensors
    curves/pair{I}/{variant}-{kind}/   curve.safetensors, history.jsonl, done.json (pam/)
    paths/pair{I}/{variant}-{kind}.json   PathResult
    planes/pair0/{variant}-bezier.json    PlaneResult
    report.md, results.json, results.csv, provenance.json, figures/*.png

A stage's work unit is finished when its marker exists: ``done.json`` for endpoints and
curves; for alignments, paths and planes the result file itself (written last, atomically)
is the marker. Markers are written by :meth:`RunDir.mark_done` and read by
:meth:`RunDir.done` only, so what a marker records (and what resuming checks) is decided in
one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from neuralign import distributed as dist_
from neuralign.errors import ConfigError
from neuralign.experiment.config import ExperimentConfig, load_config
from neuralign.io.atomic import atomic_write_text, remove_stale_temporaries

__all__ = ["RunDir"]

logger = logging.getLogger(__name__)


class RunDir:
    """Paths of every artefact of one run folder, its markers and its bookkeeping files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # ------------------------------------------------------------------ top-level files
    @property
    def config_file(self) -> Path:
        """The run's config (``config.toml``)."""
        return self.root / "config.toml"

    @property
    def spec_file(self) -> Path:
        """The permutation spec discovered on the first endpoint."""
        return self.root / "spec.json"

    @property
    def timings_file(self) -> Path:
        """Accumulated wall time per stage."""
        return self.root / "timings.json"

    @property
    def report_file(self) -> Path:
        """The Markdown report."""
        return self.root / "report.md"

    @property
    def results_json(self) -> Path:
        """The report's numbers as JSON."""
        return self.root / "results.json"

    @property
    def results_csv(self) -> Path:
        """The report's table as CSV."""
        return self.root / "results.csv"

    @property
    def provenance_file(self) -> Path:
        """Versions, source revision and device of the run (written with the report)."""
        return self.root / "provenance.json"

    @property
    def figures_dir(self) -> Path:
        """The report's figures."""
        return self.root / "figures"

    # ------------------------------------------------------------------ stage artefacts
    def endpoint_dir(self, seed: int) -> Path:
        """Training folder of the endpoint of ``seed``."""
        return self.root / "endpoints" / f"seed{seed}"

    def endpoint_checkpoint(self, seed: int) -> Path:
        """Checkpoint of the endpoint trained with ``seed``."""
        return self.endpoint_dir(seed) / "model.safetensors"

    def endpoint_marker(self, seed: int) -> Path:
        """Marker of the finished endpoint (its test metrics)."""
        return self.endpoint_dir(seed) / "done.json"

    def align_record(self, pair: int, method: str) -> Path:
        """Permutation and per-group correlations of ``pair`` aligned by ``method`` (marker)."""
        return self.root / "align" / f"pair{pair}" / f"{method}.json"

    def align_checkpoint(self, pair: int, method: str) -> Path:
        """Endpoint B of ``pair`` permuted by ``method`` (also PAM variants)."""
        return self.align_record(pair, method).with_suffix(".safetensors")

    def curve_dir(self, pair: int, variant: str, kind: str) -> Path:
        """Folder of the trained curve ``variant``-``kind`` of ``pair``."""
        return self.root / "curves" / f"pair{pair}" / f"{variant}-{kind}"

    def curve_checkpoint(self, pair: int, variant: str, kind: str) -> Path:
        """The trained curve."""
        return self.curve_dir(pair, variant, kind) / "curve.safetensors"

    def curve_history(self, pair: int, variant: str, kind: str) -> Path:
        """Per-epoch curve-training log."""
        return self.curve_dir(pair, variant, kind) / "history.jsonl"

    def curve_marker(self, pair: int, variant: str, kind: str) -> Path:
        """Marker of the finished curve."""
        return self.curve_dir(pair, variant, kind) / "done.json"

    def pam_dir(self, pair: int, variant: str) -> Path:
        """PAM's own resumable checkpoints (under the Bezier curve's folder)."""
        return self.curve_dir(pair, variant, "bezier") / "pam"

    def path_file(self, pair: int, variant: str, kind: str) -> Path:
        """The PathResult of ``variant``-``kind`` of ``pair`` (marker)."""
        return self.root / "paths" / f"pair{pair}" / f"{variant}-{kind}.json"

    def plane_file(self, variant: str, pair: int = 0) -> Path:
        """The PlaneResult through the Bezier curve of ``variant`` (marker)."""
        return self.root / "planes" / f"pair{pair}" / f"{variant}-bezier.json"

    def plane_files(self, pair: int = 0) -> list[Path]:
        """The PlaneResults written for ``pair``, sorted by name."""
        return sorted(self.plane_file("", pair).parent.glob("*.json"))

    # ------------------------------------------------------------------ JSON and markers
    @staticmethod
    def write_json(path: Path, obj: Any) -> None:
        """Write JSON atomically; in a distributed run on rank 0 only (the others wait)."""
        text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
        dist_.on_main(lambda: atomic_write_text(path, text))

    @staticmethod
    def read_json(path: Path) -> Any:
        """Read a JSON file of the run."""
        return json.loads(path.read_text())

    def mark_done(
        self,
        marker: Path,
        info: Any = None,
        *,
        save: Callable[[Path], Any] | None = None,
        artefacts: Sequence[Path] = (),
    ) -> None:
        """Record that the work unit of ``marker`` finished (the last write of every unit).

        Args:
            marker: The marker file.
            info: JSON summary written as the marker (``done.json``, alignment records).
            save: Instead of ``info``: writes the result that is its own marker to the path
                it is given (``PathResult.save``, ``PlaneResult.save``); run on rank 0.
            artefacts: The files the marker vouches for, written before it.
        """
        del artefacts  # vouched for by existence today; see the module docstring
        if save is not None:
            dist_.on_main(save, marker)
        else:
            self.write_json(marker, info)

    def is_done(self, marker: Path) -> bool:
        """Whether the work unit of ``marker`` finished."""
        return marker.exists()

    def done(self, marker: Path) -> Any | None:
        """The JSON content of a finished unit's marker, or ``None`` if it is not finished."""
        return self.read_json(marker) if self.is_done(marker) else None

    # ------------------------------------------------------------------ the folder itself
    def guard(self, cfg: ExperimentConfig, force: bool) -> None:
        """Refuse a folder that holds a run of another config (unless ``force``)."""
        if not self.config_file.exists():
            return
        try:
            old: ExperimentConfig | None = load_config(self.config_file)
        except ConfigError:
            old = None
        if (old is None or old.fingerprint() != cfg.fingerprint()) and not force:
            raise ConfigError(
                f"{self.root} holds a run of a different config; choose another --out "
                "folder, or pass --force to overwrite its config (finished stages "
                "whose inputs changed are NOT recomputed: delete the folder for a "
                "clean run)"
            )

    def claim(self, cfg: ExperimentConfig) -> None:
        """Create the folder, remove temporaries of a killed run, write ``config.toml``."""
        self.root.mkdir(parents=True, exist_ok=True)
        stale = dist_.on_main(lambda: remove_stale_temporaries(self.root))
        if stale:
            logger.info("removed %d half-written temporary file(s) of a killed run", stale)
        toml = cfg.to_toml()
        dist_.on_main(lambda: atomic_write_text(self.config_file, toml))

    def add_timing(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to the wall time recorded for ``stage``."""
        t = self.read_json(self.timings_file) if self.timings_file.exists() else {}
        t[stage] = round(t.get(stage, 0.0) + seconds, 3)
        self.write_json(self.timings_file, t)
