"""`neuralign pam`: PAM, the permutation and the curve optimised jointly."""

from __future__ import annotations

from pathlib import Path

import click

from neuralign.cli.app import cli
from neuralign.cli.common import (
    check_fits,
    claim_out,
    echo_table,
    load_data,
    load_pair,
    shard,
)
from neuralign.cli.options import curve_sgd_options, dataset_options, device_option, progress_option


@cli.command("pam")
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@dataset_options
@click.option(
    "--init",
    type=click.Choice(["identity", "correlation"]),
    default="correlation",
    show_default=True,
    help="Start from the identity (PAM Unaligned) or the correlation alignment (PAM Aligned).",
)
@click.option("--outer", type=click.IntRange(min=1), default=1, show_default=True,
              help="Outer P-step + curve-step iterations (paper: 1).")  # fmt: skip
@click.option("--p-epochs", type=click.IntRange(min=0), default=20, show_default=True,
              help="Epochs of each P-step (paper: 20).")  # fmt: skip
@click.option("--p-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="P-step step size (default: half of --lr).")  # fmt: skip
@click.option("--nu", type=click.FloatRange(min=0, min_open=True), default=1e3,
              show_default=True, help="Proximal parameter of the P-step.")  # fmt: skip
@click.option("--projection", type=click.Choice(["exact", "dykstra", "sinkhorn"]),
              default="exact", show_default=True,
              help="Projection onto the doubly stochastic matrices.")  # fmt: skip
@click.option("--round-samples", type=click.IntRange(min=0), default=8, show_default=True,
              help="Birkhoff-von Neumann samples scored as rounding candidates.")  # fmt: skip
@click.option("--align-fraction", type=click.FloatRange(0, 1, min_open=True), default=0.2,
              show_default=True, help="Training fraction used by --init correlation.")  # fmt: skip
@click.option(
    "--bends",
    type=click.IntRange(min=3),
    default=3,
    show_default=True,
    help="Control points of the Bezier curve including the endpoints.",
)
@click.option("--epochs", type=click.IntRange(min=0), default=250, show_default=True,
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
@progress_option
def pam_cmd(
    model_a: str,
    model_b: str,
    dataset: str,
    data_dir: str | None,
    download: bool,
    init: str,
    outer: int,
    p_epochs: int,
    p_lr: float | None,
    nu: float,
    projection: str,
    round_samples: int,
    align_fraction: float,
    bends: int,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    schedule: str,
    lr_step: int,
    lr_gamma: float,
    augment: bool,
    train_subset: int | None,
    seed: int,
    out: str,
    device: str,
    progress: bool,
) -> None:
    """PAM: optimise B's permutation and the Bezier curve to A jointly (resumable).

    Proximal alternating minimisation (Tatro et al. 2020, §4): P-steps on doubly stochastic
    relaxations of every permutation group, rounding, and curve training with P fixed.
    """
    from neuralign.curves import CurveTrainConfig
    from neuralign.data import TensorLoader, balanced_subset
    from neuralign.device import select_device
    from neuralign.io import save_checkpoint
    from neuralign.pamopt import PAMConfig, pam, scoring_subset
    from neuralign.training.train import _default_augment

    dev = select_device(device)
    a, b = load_pair(model_a, model_b, dev)
    train = load_data(dataset, data_dir, download, "train")
    check_fits(a, train, model_a)
    if train_subset:
        train = balanced_subset(train, n=min(train_subset, len(train)), seed=seed)
    loader = TensorLoader(
        train,
        shuffle=True,
        **shard(batch_size),
        augment=_default_augment(train) if augment else None,
        device=dev,
        seed=seed,
    )
    cfg = PAMConfig(
        outer_iterations=outer,
        p_epochs=p_epochs,
        p_lr=p_lr or 0.0,
        nu=nu,
        projection=projection,
        round_samples=round_samples,
        bends=bends,
        curve=CurveTrainConfig(
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            schedule=schedule,
            lr_step=lr_step,
            lr_gamma=lr_gamma,
        ),
        seed=seed,
    )
    # A fixed, non-augmented training subset scores rounding candidates and logs the objective.
    score = TensorLoader(scoring_subset(train, cfg, seed=seed + 1), batch_size=500, device=dev)
    align_data = balanced_subset(train, fraction=align_fraction, seed=seed)
    fields = {
        "init": init,
        "outer": outer,
        "p_epochs": p_epochs,
        "p_lr": p_lr,
        "nu": nu,
        "projection": projection,
        "round_samples": round_samples,
        "align_fraction": align_fraction,
        "bends": bends,
        "dataset": dataset,
        "train_images": len(train),
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "lr_step": lr_step,
        "lr_gamma": lr_gamma,
        "augment": augment,
        "train_subset": train_subset,
        "seed": seed,
        # the P-steps run before the curve steps: the curve epochs shape every later step
        "epochs": epochs,
    }
    claim_out(out, "neuralign pam", fields, {"model_a": model_a, "model_b": model_b})
    res = pam(
        a,
        b,
        loader,
        cfg,
        init=init,
        align_data=TensorLoader(align_data, batch_size=500, device=dev),
        score_data=score,
        device=dev,
        progress=progress,
        checkpoint_dir=out,
        metadata={"model_a": model_a, "model_b": model_b, "dataset": dataset},
    )
    save_checkpoint(
        Path(out) / "model_b.safetensors",
        res.aligned_b,
        {"aligned_to": model_a, "source": model_b, "method": f"pam-{init}"},
    )
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
