"""Stage ``report``: report.md, results.json, results.csv and the figures."""

from __future__ import annotations

from neuralign import distributed as dist_
from neuralign.experiment.context import RunContext
from neuralign.experiment.provenance import provenance
from neuralign.experiment.report import write_report


def run(ctx: RunContext) -> str:
    """Write the report of the run folder (with the run's provenance)."""
    prov = provenance(ctx.cfg, ctx.device)
    path = dist_.on_main(lambda: write_report(ctx.dir, provenance=prov))
    return f"report written to {path}"
