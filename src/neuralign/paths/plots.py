"""Figures of path evaluations: metrics along ``t`` and the loss plane.

The plots reproduce the figures of Tatro et al. (2020), "Optimizing Mode Connectivity via
Neuron Alignment" (accuracy/loss along the curve, mean ± spread over pairs; loss surface on
the plane of the curve), after Garipov et al. (2018).

Made for papers: the Okabe–Ito colour-blind-safe palette, a marker at every evaluated ``t``,
dashed lines for straight paths and solid ones for curves, no title unless asked for (the
axis labels say what is shown), equal axis scales on the plane, and every figure written as
PNG *and* PDF (the requested suffix plus the other one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from neuralign.errors import ConfigError  # noqa: E402
from neuralign.io.figures import MARKERS as _MARKERS  # noqa: E402
from neuralign.io.figures import PALETTE, save_figure  # noqa: E402
from neuralign.paths.metrics import PathResult  # noqa: E402
from neuralign.paths.plane import PlaneResult  # noqa: E402

__all__ = ["PALETTE", "plot_paths", "plot_plane"]

_LABELS = {
    "test_acc": "Test accuracy (%)",
    "test_loss": "Test loss",
    "train_acc": "Train accuracy (%)",
    "train_loss": "Train loss",
    "robust_acc": "Robust (PGD) test accuracy (%)",
    "robust_loss": "Robust (PGD) test loss",
}


def _save(fig: Any, out: str | os.PathLike[str], dpi: int) -> Path:
    return save_figure(fig, out, dpi)


def _is_straight(label: str, result: PathResult) -> bool:
    kind = str(result.metadata.get("kind", "")).lower()
    return kind == "line" or (not kind and "line" in label.lower())


_KIND_SUFFIXES = (" line", " Bezier curve", " polygonal chain", " curve")


def _variant_key(label: str) -> str:
    """The variant part of a path label (``"Aligned Bezier curve"`` -> ``"Aligned"``)."""
    for suffix in _KIND_SUFFIXES:
        if label.endswith(suffix) and len(label) > len(suffix):
            return label[: -len(suffix)]
    return label


def plot_paths(
    results: Mapping[str, PathResult | Sequence[PathResult]],
    out: str | os.PathLike[str],
    metric: str = "test_acc",
    *,
    title: str | None = None,
    dpi: int = 200,
) -> Path:
    """Plot metrics along ``t`` for several labelled paths.

    A list of results under one label is drawn as the mean line with a ± one (sample)
    standard deviation band over the list (e.g. over pairs of networks).

    Args:
        results: ``{label: PathResult or [PathResult, ...]}``.
        out: Output file (the suffix picks the format; ``.png`` recommended).
        metric: ``"test_acc"``, ``"test_loss"``, ``"train_acc"``, ``"train_loss"``, or
            ``"both"`` (test accuracy and test loss side by side).
        title: Figure title (default: none; the axis labels name the metric).
        dpi: Resolution.

    Returns:
        The path written.
    """
    if not results:
        raise ConfigError("plot_paths needs at least one result")
    metrics = ["test_acc", "test_loss"] if metric == "both" else [metric]
    for m in metrics:
        if m not in _LABELS:
            raise ConfigError(f"metric must be one of {[*_LABELS, 'both']}, got {metric!r}")
    # One colour (and marker) per variant: "Aligned line" and "Aligned Bezier curve" share
    # it and differ by line style (dashed straight line, solid curve); past 5 entries the
    # legend goes beside the axes, where it hides no curve.
    keys = [_variant_key(label) for label in results]
    slot = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    outside = len(results) > 5
    width = 5.2 * len(metrics) + (2.8 if outside else 0.0)
    fig, axes = plt.subplots(1, len(metrics), figsize=(width, 3.8), squeeze=False)
    colors = PALETTE
    for ax, m in zip(axes[0], metrics):
        for (label, res), key in zip(results.items(), keys):
            idx = slot[key]
            group = [res] if isinstance(res, PathResult) else list(res)
            if not group:
                continue
            ts = np.asarray(group[0].ts)
            values = np.asarray([r.series(m) for r in group], dtype=float)
            mean = values.mean(axis=0)
            color = colors[idx % len(colors)]
            suffix = f" (n={len(group)})" if len(group) > 1 else ""
            bad = ~np.isfinite(mean)
            if bad.any():
                # a diverged path: never a silent gap in the line (docs/reliability.md)
                suffix += f" [NaN/Inf at {int(bad.sum())} of {len(ts)} points]"
                ax.plot(
                    ts[bad],
                    np.zeros(int(bad.sum())),
                    "x",
                    color=color,
                    ms=7,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
            every = max(1, len(ts) // 16)  # a marker at each evaluated t (thinned past 16)
            ax.plot(
                ts,
                mean,
                color=color,
                lw=1.8,
                ls="--" if _is_straight(label, group[0]) else "-",
                marker=_MARKERS[idx % len(_MARKERS)],
                ms=4,
                markevery=every,
                label=f"{label}{suffix}",
            )
            if len(group) > 1:
                std = values.std(axis=0, ddof=1)
                ax.fill_between(ts, mean - std, mean + std, color=color, alpha=0.2, lw=0)
        ax.set_xlabel("$t$ (position along the path)")
        ax.set_ylabel(_LABELS[m])
        ax.set_xlim(0.0, 1.0)
        ax.grid(alpha=0.3)
    if outside:
        axes[0][-1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        for ax in axes[0]:
            ax.legend(frameon=False)
    if title is not None:
        if len(metrics) > 1:
            fig.suptitle(title)
        else:
            axes[0][0].set_title(title)
    fig.tight_layout()
    return _save(fig, out, dpi)


def plot_plane(
    plane: PlaneResult,
    out: str | os.PathLike[str],
    *,
    metric: str = "test_loss",
    title: str | None = None,
    levels: int = 20,
    dpi: int = 200,
) -> Path:
    """Filled contours of the loss (or error) on the plane, with the curve and control points.

    Args:
        plane: A :class:`~neuralign.paths.PlaneResult`.
        out: Output file.
        metric: ``"test_loss"`` (log-scaled colours) or ``"test_error"`` (100 - accuracy).
        title: Figure title (default: none; the colour bar names the metric).
        levels: Number of contour levels.
        dpi: Resolution.

    Returns:
        The path written.
    """
    xs, ys = np.asarray(plane.xs), np.asarray(plane.ys)
    span_x = float(xs.max() - xs.min()) or 1.0
    span_y = float(ys.max() - ys.min()) or 1.0
    # Equal axis scales (distances on the plane are to scale): size the figure to the plane.
    height = min(6.4, max(2.4, 5.6 * span_y / span_x + 1.0))
    fig, ax = plt.subplots(figsize=(6.4, height))
    ax.set_aspect("equal", adjustable="box")
    ticks: list[float] | None = None
    if metric == "test_loss":
        z = np.asarray(plane.test_loss, dtype=float)
        zpos = np.clip(z, max(float(z[z > 0].min()) if (z > 0).any() else 1e-6, 1e-6), None)
        lo, hi = float(zpos.min()), float(zpos.max())
        if hi > lo:
            lv = np.geomspace(lo, hi, levels)
            cs = ax.contourf(xs, ys, zpos, levels=lv, norm=LogNorm(lo, hi), cmap="viridis")
            ticks = np.geomspace(lo, hi, 6).tolist()
        else:
            cs = ax.contourf(xs, ys, zpos, levels=levels, cmap="viridis")
        label = "Test loss"
    elif metric == "test_error":
        z = 100.0 - np.asarray(plane.test_acc, dtype=float)
        cs = ax.contourf(xs, ys, z, levels=levels, cmap="viridis")
        label = "Test error (%)"
    else:
        raise ConfigError(f"metric must be 'test_loss' or 'test_error', got {metric!r}")
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.1)
    cbar = fig.colorbar(cs, cax=cax, format="%.3g")  # as tall as the plane
    if ticks is not None:
        cbar.set_ticks(ticks)
    cbar.set_label(label)
    curve = np.asarray(plane.curve_xy, dtype=float)
    family = plane.metadata.get("family", "curve")
    ax.plot(curve[:, 0], curve[:, 1], color="white", lw=2.0, label=f"{family} path")
    for name, (px, py) in plane.points.items():
        is_end = name in ("theta_a", "theta_b")
        ax.scatter(
            [px],
            [py],
            marker="o" if is_end else "^",
            s=60,
            color="black" if is_end else "tab:red",
            edgecolors="white",
            zorder=3,
        )
        text = {"theta_a": r"$\theta_A$", "theta_b": r"$\theta_B$"}.get(
            name, rf"$\theta^{{({name.removeprefix('bend')})}}$"
        )
        ax.annotate(text, (px, py), textcoords="offset points", xytext=(6, 6), color="white")
    ax.set_xlabel(r"$e_1$ (along $\theta_B - \theta_A$)")
    ax.set_ylabel(r"$e_2$" + (" (random direction)" if plane.random_direction else ""))
    ax.legend(loc="lower right", frameon=True, fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, out, dpi)
