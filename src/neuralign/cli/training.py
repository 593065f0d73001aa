"""`neuralign train` and `neuralign eval`: endpoint networks."""

from __future__ import annotations

import json
from typing import Any

import click

from neuralign.cli.app import cli
from neuralign.cli.common import DataSource, check_fits, claim_out, schedule_fields
from neuralign.cli.options import (
    attack_options,
    dataset_options,
    default,
    device_option,
    grouped,
    json_option,
    option_type,
    out_option,
    progress_option,
    sgd_option,
)
from neuralign.experiment import DataConfig, EvalConfig, ModelConfig
from neuralign.training import TrainConfig


@cli.command("train")
@grouped(
    "sgd",
    [
        "epochs",
        "batch_size",
        "lr",
        "momentum",
        "weight_decay",
        "schedule",
        "lr_step",
        "lr_gamma",
        "augment",
        "seed",
    ],
)
@click.option(
    "--arch",
    default=default(ModelConfig, "arch"),
    show_default=True,
    help="Architecture (see `neuralign models`), or your own factory as package.module:factory "
    "or path/to/file.py:factory (this imports and runs that code).",
)
@click.option(
    "--width",
    type=option_type(ModelConfig, "width"),
    default=None,
    help="Width multiplier (models that have one).",
)
@dataset_options
@sgd_option(TrainConfig, "epochs")
@sgd_option(TrainConfig, "batch_size")
@sgd_option(TrainConfig, "lr")
@sgd_option(TrainConfig, "momentum")
@sgd_option(TrainConfig, "weight_decay")
@click.option(
    "--schedule",
    type=click.Choice(["step", "cosine", "constant", "robust"]),
    default=None,
    help="step: lr×gamma every --lr-step epochs (the paper's); robust: docs/robustness.md "
    "[default: step; robust with --adversarial].",
)
@sgd_option(TrainConfig, "lr_step")
@sgd_option(TrainConfig, "lr_gamma")
@click.option(
    "--augment/--no-augment",
    default=default(TrainConfig, "augment"),
    show_default=True,
    help="Random crop, flip (RGB only) and ±15° rotation, batched on the device.",
)
@sgd_option(
    TrainConfig, "seed", help="Seed of the initialisation, data order, augmentation and dropout."
)
@click.option(
    "--train-subset",
    type=option_type(DataConfig, "train_subset"),
    default=None,
    help="Train on a class-balanced subset of this many images.",
)
@out_option(
    "Output folder: model.safetensors, metrics.jsonl; an existing run is resumed.",
    folder=True,
    required=True,
    dest="out_dir",
)
@click.option(
    "--adversarial",
    is_flag=True,
    help="Adversarial training (Madry et al. 2018): train only on PGD examples.",
)
@attack_options
@device_option
@progress_option
@json_option
def train_cmd(
    arch: str,
    width: float | None,
    data: DataSource,
    sgd: dict[str, Any],
    train_subset: int | None,
    out_dir: str,
    adversarial: bool,
    attack: dict[str, Any],
    device: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Train an endpoint network (SGD, the paper's schedule), resumable.

    With --adversarial the network is trained on L∞ PGD examples only (crafted in train
    mode, BatchNorm batch statistics, against the current weights, as in the paper) with the
    robust schedule unless --schedule is given.
    """
    import torch

    from neuralign.data import balanced_subset
    from neuralign.models import create_model, data_kwargs
    from neuralign.training import train_model

    train = data.load("train")
    test = data.load("test")
    seed = sgd["seed"]
    if train_subset:
        train = balanced_subset(train, n=train_subset, seed=seed)
    torch.manual_seed(seed)
    model = create_model(arch, **data_kwargs(arch, train, width=width))
    schedule = sgd["schedule"] or ("robust" if adversarial else default(TrainConfig, "schedule"))
    cfg = TrainConfig(**{**sgd, "schedule": schedule})
    meta: dict[str, Any] = {"dataset": data.dataset}
    pgd = None
    if adversarial:
        from neuralign.attacks import PGD, TRAINING_MODE

        # crafted with the model in train mode (BatchNorm batch statistics), as in the paper
        pgd = PGD(**attack).with_options(mode=TRAINING_MODE)
        meta["adversarial_training"] = pgd.config()
    # Everything that determines the trained weights (docs/reliability.md, "Resume with
    # changed arguments"); not the device or progress bars.
    fields: dict[str, Any] = {
        **{k: v for k, v in sgd.items() if k != "epochs"},
        "schedule": schedule,
        **schedule_fields(schedule, cfg.epochs),
        "arch": arch,
        "width": width,
        "dataset": data.dataset,
        "train_images": len(train),
        "train_subset": train_subset,
        "adversarial": meta.get("adversarial_training", False),
    }
    claim_out(out_dir, "neuralign train", fields)
    res = train_model(
        model,
        train,
        test,
        cfg,
        out_dir=out_dir,
        device=device,
        progress=progress,
        attack=pgd.attack_model if pgd else None,
        metadata=meta,
    )
    if as_json:
        summary = {"arch": arch, "seed": seed, "checkpoint": str(res.checkpoint)}
        summary.update({"test_accuracy": res.test_acc, "test_loss": res.test_loss})
        click.echo(json.dumps({**summary, "epochs": len(res.history), "history": res.history}))
        return
    if res.resumed_from_epoch >= cfg.epochs:
        click.echo(f"{out_dir}: already trained for {cfg.epochs} epochs")
    click.echo(
        f"{arch} seed {seed}: test accuracy {res.test_acc:.2f}%  "
        f"test loss {res.test_loss:.4f}  -> {res.checkpoint}"
        + (
            f"  (adversarial training: PGD eps {attack['eps']:.4g}, {attack['steps']} steps)"
            if adversarial
            else ""
        )
    )


@cli.command("eval")
@click.argument("checkpoint", type=click.Path())
@dataset_options
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option(
    "--arch", default=None, help="Architecture, for foreign checkpoints without metadata."
)
@sgd_option(EvalConfig, "batch_size")
@device_option
@json_option
def eval_cmd(
    checkpoint: str,
    data: DataSource,
    split: str,
    arch: str | None,
    batch_size: int,
    device: str,
    as_json: bool,
) -> None:
    """Loss and accuracy of a checkpoint on a dataset split."""
    from neuralign.data import make_loader
    from neuralign.device import select_device
    from neuralign.io import load_model
    from neuralign.training import evaluate_model

    dev = select_device(device)
    ds = data.load(split)
    model = load_model(checkpoint, arch=arch, device=dev)
    check_fits(model, ds, checkpoint)
    loss, acc = evaluate_model(model, make_loader(ds, batch_size, device=dev))
    if as_json:
        summary = {"checkpoint": checkpoint, "dataset": data.dataset, "split": split}
        click.echo(json.dumps({**summary, "loss": round(loss, 6), "accuracy": round(acc, 4)}))
        return
    click.echo(f"{checkpoint} on {data.dataset} {split}: accuracy {acc:.2f}%  loss {loss:.4f}")
