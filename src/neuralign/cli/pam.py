"""`neuralign pam`: PAM, the permutation and the curve optimised jointly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from neuralign.cli.app import cli
from neuralign.cli.common import (
    DataSource,
    TrainArgs,
    claim_out,
    echo_table,
    pair_and_train,
)
from neuralign.cli.options import (
    curve_sgd_options,
    dataset_options,
    default,
    device_option,
    grouped,
    json_option,
    option_type,
    progress_option,
)
from neuralign.curves import CurveTrainConfig
from neuralign.experiment import AlignConfig
from neuralign.pamopt import PAMConfig


@cli.command("pam")
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@dataset_options
@grouped(
    "pam",
    [
        "outer_iterations",
        "p_epochs",
        "p_budget",
        "p_lr",
        "nu",
        "projection",
        "round_samples",
        "bends",
    ],
)
@click.option(
    "--init",
    type=click.Choice(["identity", "correlation"]),
    default="correlation",
    show_default=True,
    help="Start from the identity (PAM Unaligned) or the correlation alignment (PAM Aligned).",
)
@click.option("--outer", "outer_iterations", type=option_type(PAMConfig, "outer_iterations"),
              default=default(PAMConfig, "outer_iterations"), show_default=True,
              help="Outer P-step + curve-step iterations (paper: 1).")  # fmt: skip
@click.option("--p-epochs", type=option_type(PAMConfig, "p_epochs"), default=default(PAMConfig, "p_epochs"),
              show_default=True, help="Epochs of each P-step (paper: 20).")  # fmt: skip
@click.option("--p-budget", type=option_type(PAMConfig, "p_budget"),
              default=default(PAMConfig, "p_budget"), show_default=True,
              help="Total P-step step size (sum of eta over its minibatch steps; the paper's "
              "20 epochs x 390 steps x 0.005). The step is the larger of half of --lr and "
              "this budget over the P-step's steps.")  # fmt: skip
@click.option("--p-lr", type=option_type(PAMConfig, "p_lr"), default=None,
              help="A fixed P-step step size (overrides --p-budget).")  # fmt: skip
@click.option("--nu", type=option_type(PAMConfig, "nu"), default=default(PAMConfig, "nu"),
              show_default=True, help="Proximal parameter of the P-step.")  # fmt: skip
@click.option("--projection", type=click.Choice(["exact", "dykstra", "sinkhorn"]),
              default=default(PAMConfig, "projection"), show_default=True,
              help="Projection onto the doubly stochastic matrices.")  # fmt: skip
@click.option("--round-samples", type=option_type(PAMConfig, "round_samples"),
              default=default(PAMConfig, "round_samples"), show_default=True,
              help="Birkhoff-von Neumann samples scored as rounding candidates.")  # fmt: skip
@click.option("--align-fraction", type=option_type(AlignConfig, "subset_fraction"),
              default=default(AlignConfig, "subset_fraction"),
              show_default=True, help="Training fraction used by --init correlation.")  # fmt: skip
@click.option(
    "--bends",
    type=option_type(PAMConfig, "bends"),
    default=default(PAMConfig, "bends"),
    show_default=True,
    help="Control points of the Bezier curve including the endpoints.",
)
@click.option("--epochs", type=option_type(CurveTrainConfig, "epochs"), default=default(CurveTrainConfig, "epochs"),
              show_default=True,
              help="Curve-training epochs of each curve step (paper: 250).")  # fmt: skip
@curve_sgd_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (curve.safetensors, model_b.safetensors, permutation.json, pam.json); "
    "an existing one is resumed.",
)
@device_option
@json_option
@progress_option
def pam_cmd(
    model_a: str,
    model_b: str,
    data: DataSource,
    init: str,
    pam: dict[str, Any],
    align_fraction: float,
    epochs: int,
    training: dict[str, Any],
    loader: TrainArgs,
    out: str,
    device: str,
    as_json: bool,
    progress: bool,
) -> None:
    """PAM: optimise B's permutation and the Bezier curve to A jointly (resumable).

    Proximal alternating minimisation (Tatro et al. 2020, §4): P-steps on doubly stochastic
    relaxations of every permutation group, rounding, and curve training with P fixed.
    """
    from neuralign.attacks import alignment_batches
    from neuralign.data import alignment_subset, make_loader
    from neuralign.io import save_checkpoint
    from neuralign.pamopt import pam as run_pam
    from neuralign.pamopt import scoring_subset

    dev, a, b, train = pair_and_train(model_a, model_b, data, device)
    train = loader.subset(train)
    seed = loader.seed
    cfg = PAMConfig(
        **{**pam, "p_lr": pam["p_lr"] or 0.0},
        curve=CurveTrainConfig(epochs=epochs, **training),
        seed=seed,
    )
    # A fixed, non-augmented training subset scores rounding candidates and logs the objective.
    score_set = scoring_subset(train, cfg, seed=seed + 1)
    fields: dict[str, Any] = {
        "pam": cfg.to_dict(),
        "init": init,
        "align_fraction": align_fraction,
        "dataset": data.dataset,
        "train_images": len(train),
        "loader": dataclasses.asdict(loader),
    }
    fields["pam"].pop("amp", None)  # a speed setting
    claim_out(out, "neuralign pam", fields, {"model_a": model_a, "model_b": model_b})
    res = run_pam(
        a,
        b,
        loader.loader(train, dev),
        cfg,
        init=init,
        align_data=alignment_batches(
            alignment_subset(train, fraction=align_fraction, seed=seed), device=dev
        ),
        score_data=make_loader(score_set, 500, device=dev),
        device=dev,
        progress=progress,
        checkpoint_dir=out,
        metadata={"model_a": model_a, "model_b": model_b, "dataset": data.dataset},
    )
    save_checkpoint(
        Path(out) / "model_b.safetensors",
        res.aligned_b,
        {"aligned_to": model_a, "source": model_b, "method": f"pam-{init}"},
    )
    if as_json:
        summary = {
            "init": init,
            "changed_fraction": res.changed_fraction,
            "changed_units": res.changed_units,
            "objective_log": res.objective_log,
            "timings": res.timings,
            "curve": str(Path(out) / "curve.safetensors"),
            "model_b": str(Path(out) / "model_b.safetensors"),
        }
        click.echo(json.dumps(summary, default=str))
        return
    rows = [
        [g, str(res.spec.groups[g].size), f"{100 * frac:.1f}%"]
        for g, frac in res.changed_fraction.items()
    ]
    echo_table(rows, ["group", "size", "changed"])
    click.echo(f"units whose assignment PAM changed: {100 * res.changed_units:.2f}%")
    for r in res.objective_log:
        click.echo(f"outer {r['outer']}  {r['stage']:<10} objective {r['objective']:.4f}")
    click.echo(
        f"PAM ({init}) done in {res.timings['total']:.1f}s -> {Path(out) / 'curve.safetensors'}, "
        f"{Path(out) / 'model_b.safetensors'}"
    )
