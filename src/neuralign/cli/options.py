"""Click option groups shared by several commands, each declared once."""

from __future__ import annotations

from typing import Any

import click

_DATASET_OPTS = [
    click.option(
        "--dataset",
        "dataset",
        default="fashion-mnist",
        show_default=True,
        help="Dataset name (see `neuralign datasets`).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Folder holding the dataset files (default: the dataset's standard place).",
    ),
    click.option(
        "--download/--no-download",
        default=False,
        show_default=True,
        help="Download the dataset (with checksum verification) if it is missing.",
    ),
]


def dataset_options(f: Any) -> Any:
    """Attach --dataset/--data-dir/--download to a command."""
    for opt in reversed(_DATASET_OPTS):
        f = opt(f)
    return f


def device_option(f: Any) -> Any:
    return click.option(
        "--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto."
    )(f)


def progress_option(f: Any) -> Any:
    return click.option(
        "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
    )(f)


def attack_options(f: Any) -> Any:
    """Attach --eps/--alpha/--steps (the L∞ PGD attack, METHOD §6; CIFAR defaults)."""
    opts = [
        click.option(
            "--eps",
            type=click.FloatRange(min=0),
            default=8 / 255,
            show_default="8/255",
            help="PGD radius (L∞, [0, 1] pixel units).",
        ),
        click.option(
            "--alpha",
            type=click.FloatRange(min=0),
            default=2 / 255,
            show_default="2/255",
            help="PGD step size.",
        ),
        click.option(
            "--steps", type=click.IntRange(min=0), default=5, show_default=True, help="PGD steps."
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def path_options(f: Any) -> Any:
    opts = [
        click.option(
            "--points",
            type=click.IntRange(min=2),
            default=65,
            show_default=True,
            help="Equally spaced values of t in [0, 1].",
        ),
        click.option(
            "--bn-mode",
            type=click.Choice(["train-subset", "train-full-augmented", "none"]),
            default="train-subset",
            show_default=True,
            help="BatchNorm statistics at each t: recomputed on a class-balanced "
            "training subset, on the full augmented training set, or not at all.",
        ),
        click.option(
            "--bn-subset",
            type=click.IntRange(min=1),
            default=5000,
            show_default=True,
            help="Images of the BN subset (train-subset mode).",
        ),
        click.option(
            "--test-subset",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Evaluate on a class-balanced test subset of this size (0 = all).",
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def curve_sgd_options(f: Any) -> Any:
    """Attach the curve-training SGD options shared by `curve` and `pam` (METHOD §3)."""
    opts = [
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option(
            "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-2, show_default=True
        ),
        click.option(
            "--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True
        ),
        click.option(
            "--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True
        ),
        click.option(
            "--schedule",
            type=click.Choice(["step", "cosine", "constant"]),
            default="step",
            show_default=True,
        ),
        click.option("--lr-step", type=click.IntRange(min=1), default=20, show_default=True),
        click.option("--lr-gamma", type=float, default=0.5, show_default=True),
        click.option("--augment/--no-augment", default=True, show_default=True),
        click.option(
            "--train-subset",
            type=click.IntRange(min=1),
            default=None,
            help="Train on a class-balanced subset of this many images.",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f
