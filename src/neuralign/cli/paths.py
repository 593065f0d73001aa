"""`neuralign interpolate`, `eval-path` and `plot`: evaluating paths between networks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from neuralign.cli.app import cli
from neuralign.cli.common import DataSource, PathArgs, check_fits, load_pair
from neuralign.cli.options import (
    dataset_options,
    device_option,
    json_option,
    out_option,
    pair_options,
    path_options,
    progress_option,
)


def _evaluate(
    curve: Any, data: DataSource, path: PathArgs, dev: Any, progress: bool, metadata: dict[str, Any]
) -> Any:
    from neuralign.data import balanced_subset, bn_loader, make_loader
    from neuralign.paths import evaluate_path

    train = data.load("train")
    test = data.load("test")
    check_fits(curve.model, test, str(metadata.get("model_a") or metadata.get("curve") or ""))
    if path.test_subset:
        test = balanced_subset(test, n=min(path.test_subset, len(test)), seed=0)
    return evaluate_path(
        curve,
        make_loader(test, path.batch_size, device=dev),
        ts=path.points,
        bn_data=bn_loader(
            train, path.bn_mode, subset=path.bn_subset, batch_size=path.batch_size, device=dev
        ),
        bn_mode=path.bn_mode,
        device=dev,
        progress=progress,
        metadata=metadata,
    )


def _print_path(res: Any, as_json: bool = False, out: str | None = None) -> None:
    """Print the summary (text or JSON); refuse (before anything is written) a non-finite path."""
    bad = res.non_finite()
    if bad:
        from neuralign.errors import DivergedError

        where = ", ".join(f"{k} at t = {[round(t, 4) for t in v][:4]}" for k, v in bad.items())
        raise DivergedError(
            f"the path has non-finite values ({where}): its metrics would be NaN, not a "
            "barrier; nothing written (is a model or the curve diverged?)"
        )
    if as_json:
        metrics = ("endpoint_accuracy", "min_accuracy", "avg_accuracy", "max_loss")
        summary: dict[str, Any] = {m: getattr(res, m) for m in metrics}
        summary.update({"loss_barrier": res.loss_barrier, "error_barrier": res.error_barrier})
        summary.update({"ts": res.ts, "test_acc": res.test_acc, "test_loss": res.test_loss})
        click.echo(json.dumps({**summary, "out": out}))
        return
    click.echo(
        f"endpoint acc {res.endpoint_accuracy:.2f}%  min acc {res.min_accuracy:.2f}%  "
        f"avg acc (arc length) {res.avg_accuracy:.2f}%  max loss {res.max_loss:.4f}  "
        f"loss barrier {res.loss_barrier:.4f}  error barrier {res.error_barrier:.2f} pts"
    )


@cli.command("interpolate")
@pair_options
@path_options
@out_option("Write the PathResult JSON.")
@device_option
@progress_option
@json_option
def interpolate_cmd(
    model_a: str,
    model_b: str,
    data: DataSource,
    path: PathArgs,
    out: str | None,
    device: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Evaluate the straight line between two checkpoints (BN recomputed at each t)."""
    from neuralign.curves import Line
    from neuralign.device import select_device

    dev = select_device(device)
    a, b = load_pair(model_a, model_b, dev)
    res = _evaluate(
        Line(a, b).to(dev),
        data,
        path,
        dev,
        progress,
        {"kind": "line", "model_a": model_a, "model_b": model_b},
    )
    _print_path(res, as_json, out)
    if out:
        res.save(out)
        if not as_json:
            click.echo(f"path written to {out}")


@cli.command("eval-path")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@dataset_options
@path_options
@out_option("PathResult JSON.", required=True)
@device_option
@progress_option
@json_option
def eval_path_cmd(
    paths: tuple[str, ...],
    data: DataSource,
    path: PathArgs,
    out: str,
    device: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Evaluate a path: a CURVE_DIR (or curve .safetensors) or two checkpoints A B (the line)."""
    from neuralign.curves import Curve, Line
    from neuralign.device import select_device

    dev = select_device(device)
    if len(paths) == 1:
        p = Path(paths[0])
        file = p / "curve.safetensors" if p.is_dir() else p
        if not file.exists():
            raise click.UsageError(f"no curve found at {file}")
        curve = Curve.load(file).to(dev)
        meta: dict[str, Any] = {"kind": curve.family, "curve": str(file)}
    elif len(paths) == 2:
        a, b = load_pair(paths[0], paths[1], dev)
        curve = Line(a, b).to(dev)
        meta = {"kind": "line", "model_a": paths[0], "model_b": paths[1]}
    else:
        raise click.UsageError("give one curve folder, or two checkpoints A B")
    res = _evaluate(
        curve,
        data,
        path,
        dev,
        progress,
        meta,
    )
    _print_path(res, as_json, out)
    res.save(out)
    if not as_json:
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
@out_option("Figure file (.png or .pdf; the other format is written beside it).", required=True)
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
    from neuralign.io.figures import companion_paths

    plot_paths(series, out, metric=metric, title=title)
    click.echo(f"figure written to {' and '.join(map(str, companion_paths(out)))}")
