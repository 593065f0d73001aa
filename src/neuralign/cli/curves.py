"""`neuralign curve`: train a curve between two checkpoints."""

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
    pair_and_train,
    schedule_fields,
)
from neuralign.cli.options import (
    curve_sgd_options,
    dataset_options,
    default,
    device_option,
    json_option,
    option_type,
    progress_option,
    sgd_option,
)
from neuralign.curves import CurveTrainConfig, curve_families, curve_family
from neuralign.pamopt import PAMConfig


@cli.command("curve")
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@dataset_options
@click.option(
    "--kind",
    type=click.Choice([f for f in curve_families() if f != "line"]),
    default="bezier",
    show_default=True,
)
@click.option(
    "--bends",
    type=option_type(PAMConfig, "bends"),
    default=default(PAMConfig, "bends"),
    show_default=True,
    help="Control points including the endpoints (3 = quadratic Bezier).",
)
@sgd_option(CurveTrainConfig, "epochs")
@curve_sgd_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (curve.safetensors, history.jsonl); an existing one is resumed.",
)
@device_option
@progress_option
@json_option
def curve_cmd(
    model_a: str,
    model_b: str,
    data: DataSource,
    kind: str,
    bends: int,
    epochs: int,
    training: dict[str, Any],
    loader: TrainArgs,
    out: str,
    device: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Train a Bezier curve or polygonal chain between two checkpoints (resumable)."""
    from neuralign.curves import train_curve

    dev, a, b, train = pair_and_train(model_a, model_b, data, device)
    train = loader.subset(train)
    cls = curve_family(kind)
    meta = {"model_a": model_a, "model_b": model_b, "dataset": data.dataset}
    curve = cls(a, b, num_bends=bends, metadata=meta).to(dev)
    fields = {
        **training,
        **schedule_fields(training.get("schedule", ""), epochs),
        "kind": kind,
        "bends": bends,
        "dataset": data.dataset,
        "train_images": len(train),
        "loader": dataclasses.asdict(loader),
    }
    claim_out(out, "neuralign curve", fields, {"model_a": model_a, "model_b": model_b})
    res = train_curve(
        curve,
        loader.loader(train, dev),
        CurveTrainConfig(epochs=epochs, **training),
        device=dev,
        progress=progress,
        log_path=Path(out) / "history.jsonl",
        checkpoint_dir=out,
        seed=loader.seed,
    )
    last = res.history[-1] if res.history else {}
    if as_json:
        summary = {"kind": kind, "bends": bends, "epochs": epochs, "history": res.history}
        click.echo(json.dumps({**summary, "out": str(Path(out) / "curve.safetensors")}))
        return
    click.echo(
        f"{kind} curve ({bends} bends) trained for {epochs} epochs: final train loss "
        f"{last.get('loss', float('nan')):.4f} -> {Path(out) / 'curve.safetensors'}"
    )
