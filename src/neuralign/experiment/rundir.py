"""The run folder of ``neuralign run``: where every artefact lives, and its stage markers.

Layout::

    config.toml                 the experiment's config (guards against mixing configs)
    spec.json                   the discovered permutation spec
    timings.json                wall time per stage
    integrity.json              artefact records of the result files that are their own marker
    .neuralign.lock             held by the running `neuralign run` (removed when it ends)
    endpoints/seed{S}/          model.safetensors, trainer.pt, metrics.jsonl, done.json
    align/pair{I}/{method}.json permutation + per-group correlations; {method}.safetensors
    curves/pair{I}/{variant}-{kind}/   curve.safetensors, history.jsonl, done.json (pam/)
    paths/pair{I}/{variant}-{kind}.json   PathResult
    planes/pair0/{variant}-bezier.json    PlaneResult
    robust/                     the robust track (``robust.pairs``): a run folder of its own
    report.md, results.json, results.csv, provenance.json, figures/*.png

A stage's work unit is finished when its marker exists and still vouches for its files:
``done.json`` for endpoints and curves; for alignments, paths and planes the result file
itself (written last, atomically) is the marker. Markers are written by
:meth:`RunDir.mark_done` and read by :meth:`RunDir.done` / :meth:`RunDir.is_done` only, so
what a marker records (and what resuming checks) is decided in one place.

Integrity (docs/reliability.md, "Integrity"): a marker records the size, SHA-256 and mtime
of the artefacts it vouches for and of the inputs they were computed from (JSON markers in
their ``_integrity`` entry; result files that are their own marker in ``integrity.json``).
Reading a marker verifies them (size always; the hash when the mtime changed, or always with
``verify=True``). A missing or corrupted artefact voids the marker: the corrupted files go
and the unit runs again (resuming from its training state when that is intact). An input
whose content changed since (an upstream unit was re-run with a different result) voids it
too, with its training state, so everything depending on a re-computed unit is recomputed.
Each such decision is reported through ``notify`` with the file and the reason.
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
from neuralign.io.integrity import ArtefactProblem, record_artefacts, verify_artefacts

__all__ = ["RunDir"]

logger = logging.getLogger(__name__)


class RunDir:
    """Paths of every artefact of one run folder, its markers and its bookkeeping files."""

    #: Index of the integrity records of result files that are their own marker.
    INTEGRITY_NAME = "integrity.json"
    #: Key of the integrity record inside a JSON marker.
    RECORD_KEY = "_integrity"

    def __init__(
        self,
        root: str | Path,
        *,
        verify: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.verify = verify
        self.notify: Callable[[str], None] = notify or logger.warning

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
    def robust_dir(self) -> Path:
        """The run folder of the robust track (``robust.pairs``), itself a run folder."""
        return self.root / "robust"

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

    def _rel(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def _files(self, paths: Sequence[Path]) -> list[Path]:
        out: list[Path] = []
        for p in paths:
            p = Path(p)
            if p.is_dir():
                out.extend(sorted(q for q in p.rglob("*") if q.is_file()))
            elif p.exists():
                out.append(p)
        return out

    def _record(
        self, artefacts: Sequence[Path], inputs: Sequence[Path], state: Sequence[Path]
    ) -> dict[str, Any]:
        missing = [str(p) for p in artefacts if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"a marker cannot vouch for missing artefacts: {missing}")
        return {
            "artefacts": record_artefacts(artefacts, self.root),
            "inputs": record_artefacts(self._files(inputs), self.root),
            "state": record_artefacts(self._files(state), self.root),
            "state_paths": [self._rel(p) for p in state],
        }

    def _index(self) -> dict[str, Any]:
        f = self.root / self.INTEGRITY_NAME
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _set_index(self, key: str, record: dict[str, Any] | None) -> None:
        index = self._index()
        if record is None:
            index.pop(key, None)
        else:
            index[key] = record
        self.write_json(self.root / self.INTEGRITY_NAME, index)

    def mark_done(
        self,
        marker: Path,
        info: Any = None,
        *,
        save: Callable[[Path], Any] | None = None,
        artefacts: Sequence[Path] = (),
        inputs: Sequence[Path] = (),
        state: Sequence[Path] = (),
    ) -> None:
        """Record that the work unit of ``marker`` finished (the last write of every unit).

        Args:
            marker: The marker file.
            info: JSON summary written as the marker (``done.json``, alignment records).
            save: Instead of ``info``: writes the result that is its own marker to the path
                it is given (``PathResult.save``, ``PlaneResult.save``); run on rank 0.
            artefacts: The files the marker vouches for, written before it.
            inputs: Files of earlier units the result was computed from (checkpoints).
            state: The unit's resume state (files or folders): removed too when an input
                changed, so the unit is recomputed instead of resumed.
        """
        if save is not None:
            dist_.on_main(save, marker)
            if dist_.is_main():
                rec = self._record([marker, *artefacts], inputs, state)
                self._set_index(self._rel(marker), rec)
        else:
            rec = self._record(artefacts, inputs, state) if dist_.is_main() else {}
            body = dict(info) if isinstance(info, dict) else {"info": info}
            self.write_json(marker, {**body, self.RECORD_KEY: rec})

    def _read_marker(self, marker: Path) -> tuple[Any, dict[str, Any] | None, str | None]:
        """``(info, record, problem)`` of an existing marker."""
        if marker.suffix == ".json" and not self._is_self_marker(marker):
            try:
                data = self.read_json(marker)
            except (OSError, ValueError) as exc:
                return None, None, f"unreadable ({type(exc).__name__})"
            if not isinstance(data, dict):
                return None, None, "not a JSON object"
            rec = data.pop(self.RECORD_KEY, None)
            if list(data) == ["info"]:
                data = data["info"]
            return data, rec, None
        return None, self._index().get(self._rel(marker)), None

    def _is_self_marker(self, marker: Path) -> bool:
        rel = self._rel(marker)
        return rel.startswith(("paths/", "planes/"))

    def _check(self, marker: Path) -> tuple[Any, list[str], bool]:
        """``(info, reasons, stale)``: why the marker no longer holds (empty: it does)."""
        info, rec, problem = self._read_marker(marker)
        if problem is not None:
            return None, [f"{self._rel(marker)}: {problem}"], False
        if not rec:  # written by an older version: existence is all it vouches for
            if self._is_self_marker(marker):
                try:
                    json.loads(marker.read_text())
                except (OSError, ValueError) as exc:
                    return None, [f"{self._rel(marker)}: unreadable ({type(exc).__name__})"], False
            return info, [], False
        if not isinstance(rec, dict):
            return None, [f"{self._rel(marker)}: malformed integrity record"], False
        reasons: list[str] = []
        broken: list[ArtefactProblem] = []
        for key in ("artefacts", "state"):
            probs = verify_artefacts(rec.get(key) or {}, self.root, verify=self.verify)
            broken += probs
            reasons += [str(p) for p in probs]
        stale = [
            f"input {p.path} changed since ({p.reason})"
            for p in verify_artefacts(rec.get("inputs") or {}, self.root, verify=self.verify)
        ]
        state_broken = any(p.path in (rec.get("state") or {}) for p in broken)
        return info, reasons + stale, bool(stale) or state_broken

    def _void(self, marker: Path, reasons: list[str], stale: bool) -> None:
        """Remove a void marker and what must be recomputed; report which and why."""
        import shutil

        _, rec, _ = self._read_marker(marker) if marker.exists() else (None, None, None)
        rec = rec if isinstance(rec, dict) else {}
        what = self._rel(marker)
        remove = [self.root / r for r in (rec.get("artefacts") or {})]
        if stale:
            remove += [self.root / r for r in rec.get("state_paths") or []]
        else:  # only what is corrupted; intact resume state is reused
            remove = [
                self.root / r.split(": ", 1)[0]
                for r in reasons
                if (self.root / r.split(": ", 1)[0]).exists() and not r.startswith("input ")
            ]
        if dist_.is_main():
            for p in remove:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists() or p.is_symlink():
                    p.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            if self._is_self_marker(marker):
                self._set_index(what, None)
        more = f" (+{len(reasons) - 2} more)" if len(reasons) > 2 else ""
        if dist_.is_main():
            self.notify(
                f"integrity: {what} no longer holds ({'; '.join(reasons[:2])}{more}): "
                "recomputing it"
            )

    def is_done(self, marker: Path) -> bool:
        """Whether the work unit of ``marker`` finished and its files still hold."""
        return self._done(marker)[0]

    def done(self, marker: Path) -> Any | None:
        """The JSON content of a finished unit's marker, or ``None`` if it is not finished."""
        ok, info = self._done(marker)
        return info if ok else None

    def _decide(self, marker: Path) -> tuple[bool, Any]:
        if not marker.exists():
            return False, None
        info, reasons, stale = self._check(marker)
        if reasons:
            self._void(marker, reasons, stale)
            return False, None
        return True, info

    def _done(self, marker: Path) -> tuple[bool, Any]:
        """Decide on rank 0 (which also removes what is void); every rank follows."""
        if not dist_.is_distributed():
            return self._decide(marker)
        import torch

        flag = torch.zeros(1, device=dist_.comm_device())
        ok, info = self._decide(marker) if dist_.is_main() else (False, None)
        if dist_.is_main():
            flag.fill_(1.0 if ok else 0.0)
        dist_.broadcast_(flag)
        if dist_.is_main():
            return ok, info
        if flag.item() == 0:
            return False, None
        info, _, _ = self._read_marker(marker)
        return True, info

    def problems(self) -> list[str]:
        """Every marker of the folder that no longer holds, as ``"marker: reason"`` lines
        (nothing is removed; :func:`~neuralign.experiment.report.write_report` refuses)."""
        markers = sorted(self.root.glob("endpoints/*/done.json"))
        markers += sorted(self.root.glob("align/*/*.json"))
        markers += sorted(self.root.glob("curves/*/*/done.json"))
        markers += sorted(self.root.glob("paths/*/*.json"))
        markers += sorted(self.root.glob("planes/*/*.json"))
        out = []
        for m in markers:
            _, reasons, _ = self._check(m)
            out += [f"{self._rel(m)}: {r}" for r in reasons]
        return out

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
        """Create the folder, remove temporaries of a killed run, write ``config.toml``.

        Temporaries are removed only in a folder that already is a run folder (it has a
        ``config.toml``), and only files named the way neuralign's atomic writes name
        theirs: ``run --out`` on someone's existing folder deletes nothing of theirs
        (docs/reliability.md, "Output paths").
        """
        owned = self.config_file.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        stale = dist_.on_main(lambda: remove_stale_temporaries(self.root)) if owned else 0
        if stale:
            logger.info("removed %d half-written temporary file(s) of a killed run", stale)
        toml = cfg.to_toml()
        dist_.on_main(lambda: atomic_write_text(self.config_file, toml))

    def add_timing(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to the wall time recorded for ``stage``."""
        t = self.read_json(self.timings_file) if self.timings_file.exists() else {}
        t[stage] = round(t.get(stage, 0.0) + seconds, 3)
        self.write_json(self.timings_file, t)
