"""Figures for papers: PNG + PDF, colour-blind palette, markers, line styles, ticks, aspect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

from neuralign.alignment.plot import plot_correlation, short_names
from neuralign.io.figures import PALETTE
from neuralign.paths import PathResult, PlaneResult, plot_paths, plot_plane


def _path(kind: str, shift: float) -> PathResult:
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    return PathResult(
        ts=ts,
        test_loss=[0.3 + shift * t * (1 - t) for t in ts],
        test_acc=[90.0 - 10 * shift * t * (1 - t) for t in ts],
        metadata={"kind": kind},
    )


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures handed to savefig (inspected before they are closed)."""
    figs: list[Any] = []
    real = plt.Figure.savefig

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        figs.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    return figs


def test_paths_figure_styles_and_formats(tmp_path: Path, captured: list[Any]) -> None:
    out = plot_paths(
        {
            "aligned line": _path("line", 1),
            "aligned curve": _path("bezier", 0.2),
            "unaligned curve": _path("bezier", 0.5),
        },
        tmp_path / "paths.png",
    )
    assert out == tmp_path / "paths.png"
    assert (tmp_path / "paths.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "paths.pdf").read_bytes()[:4] == b"%PDF"
    ax = captured[0].axes[0]
    line, curve, other = ax.get_lines()[:3]
    assert line.get_linestyle() == "--" and curve.get_linestyle() == "-"
    assert (
        line.get_marker() not in (None, "None", "")
        and list(line.get_xdata()) == _path("line", 1).ts
    )
    # one colour per variant: the aligned line and curve share one, the unaligned curve the next
    assert [line.get_color(), curve.get_color(), other.get_color()] == [
        PALETTE[0],
        PALETTE[0],
        PALETTE[1],
    ]
    assert ax.get_title() == ""  # the y label already names the metric


def test_plane_figure_has_equal_axes(tmp_path: Path, captured: list[Any]) -> None:
    plane = PlaneResult(
        xs=[0.0, 0.5, 1.0],
        ys=[-0.2, 0.0, 0.2],
        test_loss=[[0.5, 0.6, 0.5], [0.3, 0.9, 0.3], [0.5, 0.6, 0.5]],
        test_acc=[[80, 70, 80], [90, 60, 90], [80, 70, 80]],
        curve_ts=[0.0, 0.5, 1.0],
        curve_xy=[[0.0, 0.0], [0.5, 0.1], [1.0, 0.0]],
        points={"theta_a": [0.0, 0.0], "bend1": [0.5, 0.2], "theta_b": [1.0, 0.0]},
    )
    plot_plane(plane, tmp_path / "plane.pdf", metric="test_error")
    assert (tmp_path / "plane.png").is_file() and (tmp_path / "plane.pdf").is_file()
    ax = captured[0].axes[0]
    assert ax.get_aspect() == 1.0 and ax.get_title() == ""


def test_correlation_ticks_are_short_and_rotated(tmp_path: Path, captured: list[Any]) -> None:
    groups = [f"encoder.blocks.{i}.attention.projection" for i in range(12)]
    names = short_names(groups)
    assert names[0].startswith("0.") and all(len(n) <= 16 for n in names)
    assert len(set(names)) == len(groups)
    vals = {g: 0.1 * i for i, g in enumerate(groups)}
    plot_correlation(groups, vals, {g: 0.9 for g in groups}, tmp_path / "corr.png")
    assert (tmp_path / "corr.pdf").is_file()
    ax = captured[0].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == names and ax.get_xticklabels()[0].get_rotation() == 60
    assert short_names(["a.x", "b.x"]) == ["a.x", "b.x"]
