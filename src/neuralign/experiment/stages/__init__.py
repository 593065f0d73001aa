"""The stages of ``neuralign run``, in order; each is a module with ``run(ctx) -> str``.

A stage reads what earlier stages wrote through the run folder
(:class:`~neuralign.experiment.rundir.RunDir`), skips finished work units (their markers
exist) and returns a one-line summary.
"""

from __future__ import annotations

from collections.abc import Callable

from neuralign.experiment.context import RunContext
from neuralign.experiment.stages import align, curves, endpoints, paths, report, robust

__all__ = ["RUNNERS", "STAGES"]

#: Stage name -> runner, in the order a run executes them.
RUNNERS: dict[str, Callable[[RunContext], str]] = {
    "endpoints": endpoints.run,
    "align": align.run,
    "curves": curves.run,
    "paths": paths.run,
    "robust": robust.run,
    "report": report.run,
}

#: The stages, in order.
STAGES = tuple(RUNNERS)
