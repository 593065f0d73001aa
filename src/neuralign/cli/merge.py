"""`neuralign merge`: merge two or more checkpoints into one network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from neuralign.cli.app import cli
from neuralign.cli.common import DataSource, check_fits, echo_table
from neuralign.cli.options import (
    dataset_options,
    device_option,
    json_option,
    out_option,
    param_option,
    range_type,
)
from neuralign.merge import merge
from neuralign.merge.api import METHODS, PARAM_RANGES


@cli.command("merge")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@param_option(
    merge,
    "method",
    click.Choice(list(METHODS)),
    "Unit matching: activation correlation or weight matching.",
)
@param_option(
    merge,
    "repair_stats",
    None,
    "REPAIR: renormalise the merged units to the endpoints' statistics "
    "(Jordan et al. 2023; see docs/merging.md).",
    "--repair/--no-repair",
    "repair",
)
@dataset_options
@param_option(
    merge,
    "subset_fraction",
    range_type(PARAM_RANGES["subset_fraction"], False),
    "Fraction of the training set for the correlation statistics.",
)
@param_option(
    merge,
    "bn_subset",
    range_type(PARAM_RANGES["bn_subset"], True),
    "Training images for the BatchNorm recomputation and REPAIR.",
)
@param_option(
    merge,
    "max_rounds",
    range_type(PARAM_RANGES["max_rounds"], True),
    "MergeMany rounds for three or more models.",
)
@click.option(
    "--evaluate/--no-evaluate",
    default=True,
    show_default=True,
    help="Report test accuracy of the endpoints, the naive average and the merge.",
)
@out_option("The merged checkpoint (.safetensors).", required=True)
@device_option
@json_option
def merge_cmd(
    models: tuple[str, ...],
    method: str,
    repair: bool,
    data: DataSource,
    subset_fraction: float,
    bn_subset: int,
    max_rounds: int,
    evaluate: bool,
    out: str,
    device: str,
    as_json: bool,
) -> None:
    """Merge checkpoints A B [C ...]: align every model's units, average, recompute BatchNorm.

    Two models: B is aligned to A. Three or more: aligned to the first, then re-aligned to
    the average of the others until no permutation changes (Git Re-Basin's MergeMany).
    """
    from neuralign.checks import check_compatible_models
    from neuralign.device import select_device
    from neuralign.io import load_model, save_checkpoint
    from neuralign.io.outputs import check_not_input

    if len(models) < 2:
        raise click.UsageError("give at least two checkpoints to merge")
    if not out.endswith(".safetensors"):
        raise click.UsageError(f"--out must be a .safetensors file, got {out!r}")
    check_not_input(out, list(models), "--out")
    dev = select_device(device)
    nets = [load_model(m, device=dev) for m in models]
    check_compatible_models(nets, list(models), what="merge")
    train = data.load("train")
    check_fits(nets[0], train, models[0])
    test = data.load("test") if evaluate else None
    res = merge(
        nets,
        train,
        method,
        test_data=test,
        repair_stats=repair,
        subset_fraction=subset_fraction,
        bn_subset=bn_subset,
        max_rounds=max_rounds,
    )
    summary: dict[str, Any] = {
        "models": list(models),
        "method": method,
        "repair": repair,
        "rounds": res.rounds,
        "converged": res.converged,
        "moved_units": res.moved_units,
        "evaluation": res.evaluation,
        "out": out,
    }
    if res.repair is not None:
        summary["repair_corrected"] = res.repair.corrected
        summary["repair_by_batchnorm"] = res.repair.by_batchnorm
        summary["repair_skipped"] = res.repair.skipped
    meta = {k: v for k, v in summary.items() if k != "out"}
    meta["dataset"] = data.dataset
    save_checkpoint(out, res.model, {"merge": meta})
    if as_json:
        click.echo(json.dumps(summary))
        return
    if res.evaluation:
        rows = [[r["model"], f"{r['accuracy']:.2f}", f"{r['loss']:.4f}"] for r in res.evaluation]
        echo_table(rows, ["model", "test acc %", "test loss"])
    if len(models) > 2:
        state = "converged" if res.converged else "not converged"
        last = f", {res.moved_units[-1]} units moved in the last" if res.moved_units else ""
        click.echo(f"MergeMany: {res.rounds} rounds ({state}{last})")
    if res.repair is not None:
        click.echo(
            f"REPAIR corrected {len(res.repair.corrected)} layer(s); "
            f"{len(res.repair.by_batchnorm)} group(s) renormalised by BatchNorm"
        )
    click.echo(f"merged model written to {Path(out)}")
