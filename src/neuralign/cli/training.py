"""`neuralign train` and `neuralign eval`: endpoint networks."""

from __future__ import annotations

import json
from typing import Any

import click

from neuralign.cli.app import cli
from neuralign.cli.common import check_fits, claim_out, load_data, schedule_fields
from neuralign.cli.options import attack_options, dataset_options, device_option, progress_option


@cli.command("train")
@click.option(
    "--arch",
    default="tinyten",
    show_default=True,
    help="Architecture (see `neuralign models`), or your own factory as package.module:factory "
    "or path/to/file.py:factory (this imports and runs that code).",
)
@click.option("--width", type=float, default=None, help="Width multiplier (models that have one).")
@dataset_options
@click.option("--epochs", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True)
@click.option(
    "--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True
)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["step", "cosine", "constant", "robust"]),
    default=None,
    help="step: lr×gamma every --lr-step epochs (the paper's); robust: METHOD §6 "
    "[default: step; robust with --adversarial].",
)
@click.option("--lr-step", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--lr-gamma", type=float, default=0.5, show_default=True)
@click.option(
    "--augment/--no-augment",
    default=True,
    show_default=True,
    help="Random crop, flip (RGB only) and ±15° rotation, batched on the device.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initialisation, data order, augmentation and dropout.",
)
@click.option(
    "--train-subset",
    type=click.IntRange(min=1),
    default=None,
    help="Train on a class-balanced subset of this many images.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder: model.safetensors, metrics.jsonl; an existing run is resumed.",
)
@click.option(
    "--adversarial",
    is_flag=True,
    help="Adversarial training (Madry et al. 2018): train only on PGD examples.",
)
@attack_options
@device_option
@progress_option
def train_cmd(
    arch: str,
    width: float | None,
    dataset: str,
    data_dir: str | None,
    download: bool,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    schedule: str,
    lr_step: int,
    lr_gamma: float,
    augment: bool,
    seed: int,
    train_subset: int | None,
    out_dir: str,
    adversarial: bool,
    eps: float,
    alpha: float,
    steps: int,
    device: str,
    progress: bool,
) -> None:
    """Train an endpoint network (SGD, the paper's schedule), resumable.

    With --adversarial the network is trained on L∞ PGD examples only (crafted in eval
    mode against the current weights) with the robust schedule unless --schedule is given.
    """
    import torch

    from neuralign.data import balanced_subset
    from neuralign.models import create_model, is_reference
    from neuralign.training import TrainConfig, train_model

    train = load_data(dataset, data_dir, download, "train")
    test = load_data(dataset, data_dir, download, "test")
    if train_subset:
        train = balanced_subset(train, n=train_subset, seed=seed)
    kwargs: dict[str, Any] = {
        "num_classes": train.num_classes,
        "in_channels": train.images.shape[1],
        "mean": list(train.mean),
        "std": list(train.std),
    }
    if width is not None:
        kwargs["width"] = width
    if arch == "mlp" or is_reference(arch):  # models whose layer sizes may need the image size
        kwargs["image_size"] = train.images.shape[-1]
    torch.manual_seed(seed)
    model = create_model(arch, **kwargs)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule or ("robust" if adversarial else "step"),
        lr_step=lr_step,
        lr_gamma=lr_gamma,
        augment=augment,
        seed=seed,
    )
    meta: dict[str, Any] = {"dataset": dataset}
    attack = None
    if adversarial:
        from neuralign.attacks import PGD

        pgd = PGD(eps=eps, alpha=alpha, steps=steps)
        attack = pgd.attack_model
        meta["adversarial_training"] = pgd.config()
    # Everything that determines the trained weights (docs/reliability.md, "Resume with
    # changed arguments"); not the device or progress bars.
    fields: dict[str, Any] = {
        "arch": arch,
        "model": {k: v for k, v in kwargs.items() if k not in ("mean", "std")},
        "dataset": dataset,
        "train_images": len(train),
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "schedule": cfg.schedule,
        "lr_step": lr_step,
        "lr_gamma": lr_gamma,
        "augment": augment,
        "seed": seed,
        "train_subset": train_subset,
        "adversarial": meta.get("adversarial_training", False),
        **schedule_fields(cfg.schedule, epochs),
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
        attack=attack,
        metadata=meta,
    )
    if res.resumed_from_epoch >= epochs:
        click.echo(f"{out_dir}: already trained for {epochs} epochs")
    click.echo(
        f"{arch} seed {seed}: test accuracy {res.test_acc:.2f}%  "
        f"test loss {res.test_loss:.4f}  -> {res.checkpoint}"
        + (f"  (adversarial training: PGD eps {eps:.4g}, {steps} steps)" if adversarial else "")
    )


@cli.command("eval")
@click.argument("checkpoint", type=click.Path())
@dataset_options
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option(
    "--arch", default=None, help="Architecture, for foreign checkpoints without metadata."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@device_option
def eval_cmd(
    checkpoint: str,
    dataset: str,
    data_dir: str | None,
    download: bool,
    split: str,
    arch: str | None,
    batch_size: int,
    device: str,
) -> None:
    """Loss and accuracy of a checkpoint on a dataset split."""
    from neuralign.data import TensorLoader
    from neuralign.device import select_device
    from neuralign.io import load_model
    from neuralign.training import evaluate_model

    dev = select_device(device)
    data = load_data(dataset, data_dir, download, split)
    model = load_model(checkpoint, arch=arch, device=dev)
    check_fits(model, data, checkpoint)
    loss, acc = evaluate_model(model, TensorLoader(data, batch_size=batch_size, device=dev))
    click.echo(
        json.dumps(
            {
                "checkpoint": checkpoint,
                "dataset": dataset,
                "split": split,
                "loss": round(loss, 6),
                "accuracy": round(acc, 4),
            }
        )
    )
