"""`neuralign curve`: train a curve between two checkpoints."""

from __future__ import annotations

from pathlib import Path

import click

from neuralign.cli.app import cli
from neuralign.cli.common import (
    check_fits,
    claim_out,
    load_data,
    load_pair,
    schedule_fields,
    shard,
)
from neuralign.cli.options import curve_sgd_options, dataset_options, device_option, progress_option


@cli.command("curve")
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@dataset_options
@click.option(
    "--kind", type=click.Choice(["bezier", "polychain"]), default="bezier", show_default=True
)
@click.option(
    "--bends",
    type=click.IntRange(min=3),
    default=3,
    show_default=True,
    help="Control points including the endpoints (3 = quadratic Bezier).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=250, show_default=True)
@curve_sgd_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (curve.safetensors, history.jsonl); an existing one is resumed.",
)
@device_option
@progress_option
def curve_cmd(
    model_a: str,
    model_b: str,
    dataset: str,
    data_dir: str | None,
    download: bool,
    kind: str,
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
    """Train a Bezier curve or polygonal chain between two checkpoints (resumable)."""
    from neuralign.curves import Bezier, CurveTrainConfig, PolyChain, train_curve
    from neuralign.data import TensorLoader, balanced_subset
    from neuralign.device import select_device
    from neuralign.training.train import _default_augment

    dev = select_device(device)
    a, b = load_pair(model_a, model_b, dev)
    train = load_data(dataset, data_dir, download, "train")
    check_fits(a, train, model_a)
    if train_subset:
        train = balanced_subset(train, n=min(train_subset, len(train)), seed=seed)
    cls = Bezier if kind == "bezier" else PolyChain
    curve = cls(
        a, b, num_bends=bends, metadata={"model_a": model_a, "model_b": model_b, "dataset": dataset}
    ).to(dev)
    loader = TensorLoader(
        train,
        shuffle=True,
        **shard(batch_size),
        augment=_default_augment(train) if augment else None,
        device=dev,
        seed=seed,
    )
    fields = {
        "kind": kind,
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
        **schedule_fields(schedule, epochs),
    }
    claim_out(out, "neuralign curve", fields, {"model_a": model_a, "model_b": model_b})
    res = train_curve(
        curve,
        loader,
        CurveTrainConfig(
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            schedule=schedule,
            lr_step=lr_step,
            lr_gamma=lr_gamma,
        ),
        device=dev,
        progress=progress,
        log_path=Path(out) / "history.jsonl",
        checkpoint_dir=out,
        seed=seed,
    )
    last = res.history[-1] if res.history else {}
    click.echo(
        f"{kind} curve ({bends} bends) trained for {epochs} epochs: final train loss "
        f"{last.get('loss', float('nan')):.4f} -> {Path(out) / 'curve.safetensors'}"
    )
