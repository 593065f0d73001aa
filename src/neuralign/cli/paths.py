"""`neuralign interpolate`, `eval-path` and `plot`: evaluating paths between networks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from neuralign.cli.app import cli
from neuralign.cli.common import check_fits, load_data, load_pair
from neuralign.cli.options import dataset_options, device_option, path_options, progress_option


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

    train = load_data(dataset, data_dir, download, "train")
    test = load_data(dataset, data_dir, download, "test")
    check_fits(curve.model, test, str(metadata.get("model_a") or metadata.get("curve") or ""))
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
    """Print the summary line; refuse (before anything is written) a non-finite path."""
    bad = res.non_finite()
    if bad:
        from neuralign.errors import DivergedError

        where = ", ".join(f"{k} at t = {[round(t, 4) for t in v][:4]}" for k, v in bad.items())
        raise DivergedError(
            f"the path has non-finite values ({where}): its metrics would be NaN, not a "
            "barrier; nothing written (is a model or the curve diverged?)"
        )
    click.echo(
        f"endpoint acc {res.endpoint_accuracy:.2f}%  min acc {res.min_accuracy:.2f}%  "
        f"avg acc (arc length) {res.avg_accuracy:.2f}%  max loss {res.max_loss:.4f}  "
        f"loss barrier {res.loss_barrier:.4f}  error barrier {res.error_barrier:.2f} pts"
    )


@cli.command("interpolate")
@click.argument("model_a", type=click.Path())
@click.argument("model_b", type=click.Path())
@dataset_options
@path_options
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Write the PathResult JSON."
)
@device_option
@progress_option
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
    a, b = load_pair(model_a, model_b, dev)
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


@cli.command("eval-path")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@dataset_options
@path_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PathResult JSON.")
@device_option
@progress_option
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
