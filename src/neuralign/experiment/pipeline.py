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

from neuralign import distributed as dist_
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
        verify: bool = False,
    ) -> None:
        super().__init__(cfg, run_dir, progress=progress, echo=echo)
        self.run_sub = lambda sub, folder, sub_echo: Experiment(
            sub, folder, force=force, progress=progress, echo=sub_echo, verify=verify
        ).run()
        self.run_dir.verify = verify
        self.run_dir.notify = self.echo
        self.run_dir.guard(cfg, force)

    def _start(self, stages: tuple[str, ...], lock: Any = None) -> None:
        """Validate the inputs, then claim the run folder (write ``config.toml``).

        Nothing is written before the data load and the model fits them, so a bad input
        leaves no half-started run folder behind.
        """
        if any(s != "report" for s in stages):
            from neuralign.checks import build_model, check_model_fits_data, check_training_data

            check_training_data(self.data.train)
            probe = build_model(self.cfg.model.arch, self.model_kwargs())
            check_model_fits_data(probe, self.data.test, f"model {self.cfg.model.arch!r}")
        if lock is not None and not lock.held:
            lock.acquire()
        self.run_dir.claim(self.cfg)

    def run(self, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
        """Run (or resume) the given stages in order; return the report's results.

        The run folder's lock (:class:`~neuralign.io.runlock.RunLock`) is held throughout:
        a second run on the same folder fails at once naming this one.
        """
        from neuralign.io.runlock import RunLock

        lock = None
        if dist_.is_main():
            lock = RunLock(self.dir, "neuralign run", notify=self.echo)
            # (the folder itself is created only after the inputs are validated)
            if self.dir.exists():
                lock.acquire()
        try:
            return self._run(stages, lock)
        finally:
            if lock is not None:
                lock.release()

    def _run(self, stages: tuple[str, ...], lock: Any) -> dict[str, Any]:
        results: dict[str, Any] = {}
        self._start(stages, lock)
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
    verify: bool = False,
) -> dict[str, Any]:
    """Run or resume an experiment; return the report's ``results.json`` content.

    ``verify``: hash every artefact a finished stage vouches for (by default only files
    whose size or mtime changed are hashed).
    """
    if isinstance(cfg, dict):
        cfg = parse_config(cfg)
    exp = Experiment(cfg, run_dir, force=force, progress=progress, echo=echo, verify=verify)
    return exp.run(stages)
