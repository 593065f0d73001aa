"""`neuralign plane`: the loss/accuracy plane through a curve's control points."""

from __future__ import annotations

import json
from pathlib import Path

import click

from neuralign.cli.app import cli
from neuralign.cli.common import DataSource, check_fits
from neuralign.cli.options import (
    bn_options,
    dataset_options,
    device_option,
    field_option,
    json_option,
    option_type,
    out_option,
    param_option,
    progress_option,
    range_type,
    sgd_option,
)
from neuralign.experiment.config import EvalConfig
from neuralign.paths import evaluate_plane
from neuralign.paths.plane import PARAM_RANGES as PLANE_RANGES


@cli.command("plane")
@click.argument("curve_dir", type=click.Path())
@dataset_options
@field_option(
    EvalConfig,
    "plane_grid",
    option_type(EvalConfig, "plane_grid"),
    "Grid points per side of the plane.",
    "--grid",
    "grid",
)
@param_option(
    evaluate_plane,
    "margin",
    range_type(PLANE_RANGES["margin"], False),
    "Margin around the curve, relative to its extent.",
)
@bn_options("BatchNorm statistics at each grid point.")
@field_option(
    EvalConfig,
    "plane_test_subset",
    option_type(EvalConfig, "plane_test_subset"),
    "Class-balanced test images per grid point (0 = all).",
    "--test-subset",
    "test_subset",
)
@sgd_option(EvalConfig, "batch_size")
@out_option("Folder for plane.json and the figures (default: CURVE_DIR).", folder=True)
@device_option
@progress_option
@json_option
def plane_cmd(
    curve_dir: str,
    data: DataSource,
    grid: int,
    margin: float,
    bn_mode: str,
    bn_subset: int,
    test_subset: int,
    batch_size: int,
    out: str | None,
    device: str,
    progress: bool,
    as_json: bool,
) -> None:
    """Evaluate test loss and accuracy on the plane through a curve's endpoints and first bend.

    Writes plane.json (the PlaneResult) and the figures plane-loss.{png,pdf} and
    plane-error.{png,pdf} (test loss, test error) with the curve and its control points.
    """
    from neuralign.curves import Curve
    from neuralign.data import balanced_subset, bn_loader, make_loader
    from neuralign.device import select_device
    from neuralign.io.figures import companion_paths
    from neuralign.paths import plot_plane

    p = Path(curve_dir)
    file = p / "curve.safetensors" if p.is_dir() else p
    if not file.is_file():
        raise click.UsageError(f"no curve found at {file} (give a `neuralign curve --out` folder)")
    dev = select_device(device)
    curve = Curve.load(file).to(dev)
    train = data.load("train")
    test = data.load("test")
    check_fits(curve.model, test, str(file))
    if test_subset and test_subset < len(test):
        test = balanced_subset(test, n=test_subset, seed=0)
    folder = Path(out) if out else (p if p.is_dir() else p.parent)
    plane = evaluate_plane(
        curve,
        make_loader(test, batch_size, device=dev),
        grid=(grid, grid),
        margin=margin,
        bn_data=bn_loader(train, bn_mode, subset=bn_subset, batch_size=batch_size, device=dev),
        bn_mode=bn_mode,
        device=dev,
        progress=progress,
        metadata={"curve": str(file), "dataset": data.dataset},
    )
    folder.mkdir(parents=True, exist_ok=True)
    json_path = plane.save(folder / "plane.json")
    figures = []
    for metric, stem in (("test_loss", "plane-loss"), ("test_error", "plane-error")):
        png = plot_plane(plane, folder / f"{stem}.png", metric=metric)  # and the .pdf twin
        figures += [str(p) for p in companion_paths(png)]
    best = min(min(row) for row in plane.test_loss)
    top = max(max(row) for row in plane.test_acc)
    if as_json:
        summary = {
            "plane": str(json_path),
            "figures": figures,
            "grid": grid,
            "min_test_loss": best,
            "max_test_accuracy": top,
            "off_plane": plane.off_plane,
        }
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"plane {grid}x{grid}: min test loss {best:.4f}, max test acc {top:.2f}%, "
        f"curve off the plane by {plane.off_plane:.3g}"
    )
    click.echo(f"plane written to {json_path}; figures {', '.join(figures)}")
