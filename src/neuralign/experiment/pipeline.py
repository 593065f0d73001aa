"""``neuralign run``: train endpoints → align pairs → fit curves → evaluate paths → report.

Every stage (one module each in :mod:`neuralign.experiment.stages`) writes its outputs into
the run folder (:mod:`neuralign.experiment.rundir`, which also documents the layout)
atomically and marks each finished work unit; re-running skips finished work, and a run
killed at any point resumes where it stopped (endpoint and curve training resume from
their last epoch checkpoint).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from neuralign.experiment.config import ExperimentConfig, parse_config
from neuralign.experiment.context import Echo, RunContext
from neuralign.experiment.stages import RUNNERS, STAGES

__all__ = ["STAGES", "Experiment", "run_experiment"]


class Experiment(RunContext):
    """One experiment in one run folder, run stage by stage.

    Args:
        cfg: The experiment.
        run_dir: Its run folder.
        force: Reuse a folder that holds a run of another config.
        progress: Show progress bars.
        echo: Where the one-line stage summaries go (default: the log).

    Raises:
        ConfigError: If ``run_dir`` holds a run of another config and not ``force``.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: str | Path,
        *,
        force: bool = False,
        progress: bool = True,
        echo: Echo | None = None,
    ) -> None:
        super().__init__(cfg, run_dir, progress=progress, echo=echo)
        self.run_dir.guard(cfg, force)

    def _start(self, stages: tuple[str, ...]) -> None:
        """Validate the inputs, then claim the run folder (write ``config.toml``).

        Nothing is written before the data load and the model fits them, so a bad input
        leaves no half-started run folder behind.
        """
        if any(s != "report" for s in stages):
            from neuralign.checks import build_model, check_model_fits_data, check_training_data

            check_training_data(self.data.train)
            probe = build_model(self.cfg.model.arch, self.model_kwargs())
            check_model_fits_data(probe, self.data.test, f"model {self.cfg.model.arch!r}")
        self.run_dir.claim(self.cfg)

    def run(self, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
        """Run (or resume) the given stages in order; return the report's results."""
        results: dict[str, Any] = {}
        self._start(stages)
        for stage in STAGES:
            if stage not in stages:
                continue
            t0 = time.perf_counter()
            summary = RUNNERS[stage](self)
            dt = time.perf_counter() - t0
            self.run_dir.add_timing(stage, dt)
            self.echo(f"[{stage}] {summary} ({dt:.1f}s)")
            if stage == "report":
                results = self.run_dir.read_json(self.run_dir.results_json)
        return results


def run_experiment(
    cfg: ExperimentConfig | dict[str, Any],
    run_dir: str | Path,
    *,
    stages: tuple[str, ...] = STAGES,
    force: bool = False,
    progress: bool = True,
    echo: Echo | None = None,
) -> dict[str, Any]:
    """Run or resume an experiment; return the report's ``results.json`` content."""
    if isinstance(cfg, dict):
        cfg = parse_config(cfg)
    return Experiment(cfg, run_dir, force=force, progress=progress, echo=echo).run(stages)
