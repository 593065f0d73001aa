"""Plots write non-empty PNG files."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuralign.errors import ConfigError
from neuralign.paths import PathResult, PlaneResult, plot_paths, plot_plane

PNG = b"\x89PNG\r\n\x1a\n"


def _path(shift: float) -> PathResult:
    ts = [i / 10 for i in range(11)]
    bump = [4 * t * (1 - t) for t in ts]
    return PathResult(
        ts=ts,
        test_loss=[0.3 + shift + v for v in bump],
        test_acc=[95 - shift - 20 * v for v in bump],
        distances=[1.0] * 10,
    )


def test_plot_paths(tmp_path: Path) -> None:
    results = {"aligned": [_path(0.0), _path(0.5), _path(1.0)], "unaligned": _path(2.0)}
    for metric in ("test_acc", "test_loss", "both"):
        out = plot_paths(results, tmp_path / f"{metric}.png", metric=metric, title="demo")
        data = out.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    with pytest.raises(ConfigError):
        plot_paths(results, tmp_path / "x.png", metric="nope")


def test_plot_plane(tmp_path: Path) -> None:
    xs = [-1.0, 0.0, 1.0, 2.0, 3.0]
    ys = [-1.0, 0.0, 1.0, 2.0]
    loss = [[0.1 + (x - 1) ** 2 * 0.1 + (y - 1) ** 2 for x in xs] for y in ys]
    plane = PlaneResult(
        xs=xs,
        ys=ys,
        test_loss=loss,
        test_acc=[[100 - 10 * v for v in row] for row in loss],
        curve_ts=[0.0, 0.5, 1.0],
        curve_xy=[[0.0, 0.0], [1.0, 0.5], [2.0, 0.0]],
        points={"theta_a": [0.0, 0.0], "bend1": [1.0, 1.0], "theta_b": [2.0, 0.0]},
        metadata={"family": "bezier"},
    )
    for metric in ("test_loss", "test_error"):
        out = plot_plane(plane, tmp_path / f"plane_{metric}.png", metric=metric)
        assert out.read_bytes().startswith(PNG) and out.stat().st_size > 5000
