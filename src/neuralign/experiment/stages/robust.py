"""Stage ``robust``: the robust track (``robust.pairs``), a robust sub-run in ``robust/``.

The clean table of a run holds every variant for every pair; the paper's robust rows
(Tatro et al. 2020, §5) are for adversarially trained endpoints and robust curves, which
cost about 6x their clean counterparts. ``robust.pairs = N`` adds them for the first N
pairs: the stage runs :func:`~neuralign.experiment.config.robust_track_config` (the run's
config with ``robust.enabled = true`` on those pairs' seeds) as a run of its own in
``<run>/robust/`` (resumable like any run), and the report adds its tables.
"""

from __future__ import annotations

from neuralign.experiment.config import robust_track_config
from neuralign.experiment.context import RunContext


def run(ctx: RunContext) -> str:
    """Run (or resume) the robust track; summarise its robust loss barriers."""
    sub = robust_track_config(ctx.cfg)
    if sub is None:
        return "no robust track (robust.pairs = 0)"
    if ctx.run_sub is None:
        raise RuntimeError("the robust track runs inside an Experiment (neuralign run)")

    def echo(line: str) -> None:
        ctx.echo(f"  robust track {line}")

    results = ctx.run_sub(sub, ctx.run_dir.robust_dir, echo)
    parts = [
        f"{r['path']} robust barrier {r['robust_loss_barrier']:.3f}"
        for r in results.get("table", [])
        if r.get("robust_loss_barrier") is not None
    ]
    return f"{ctx.run_dir.robust_dir}: " + ("; ".join(parts) or "no robust path")
