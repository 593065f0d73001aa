"""The paper's layer-wise figure: mean matched correlation per group before/after alignment."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_correlation(
    groups: Sequence[str],
    before: Mapping[str, Sequence[float]] | Mapping[str, float],
    after: Mapping[str, Sequence[float]] | Mapping[str, float],
    out: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 200,
) -> Path:
    """Plot the mean matched correlation per group (in forward order), before and after.

    Values may be single floats or lists (one per pair): lists are drawn as mean ± std.
    Group names are shortened for the tick labels (:func:`short_names`) and rotated; the
    figure is written as PNG and PDF (``out`` and its twin), in colour-blind-safe colours.

    Returns:
        The path written (``out``).
    """
    import numpy as np

    from neuralign.io.figures import PALETTE, save_figure

    def stats(
        d: Mapping[str, Sequence[float]] | Mapping[str, float],
    ) -> tuple[np.ndarray, np.ndarray]:
        means, stds = [], []
        for g in groups:
            v = d[g]
            arr = np.atleast_1d(np.asarray(v, dtype=float))
            means.append(arr.mean())
            stds.append(arr.std(ddof=1) if arr.size > 1 else 0.0)
        return np.asarray(means), np.asarray(stds)

    x = np.arange(1, len(groups) + 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(groups) + 2), 3.6))
    for label, d, color, marker in (
        ("Unaligned (identity)", before, PALETTE[1], "o"),
        ("Aligned", after, PALETTE[0], "s"),
    ):
        m, s = stats(d)
        ax.plot(x, m, marker=marker, color=color, label=label, lw=1.5, ms=4)
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, lw=0)
    ax.set_xlabel("Layer (permutation group, input to output)")
    ax.set_ylabel("Mean correlation of matched units")
    if title:
        ax.set_title(title)
    step = max(1, -(-len(groups) // 40))  # at most 40 tick labels
    ax.set_xticks(x[::step])
    ax.set_xticklabels(short_names(groups)[::step], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, dpi)  # atomic: a killed run never leaves half a figure


def short_names(groups: Sequence[str], width: int = 16) -> list[str]:
    """Tick labels for group names: the common dotted prefix dropped, long names elided.

    ``["features.0.conv", "features.3.conv"]`` → ``["0.conv", "3.conv"]``; a name longer than
    ``width`` keeps its start and end around an ellipsis. Distinct names stay distinct (else
    the full names are returned).
    """
    parts = [g.split(".") for g in groups]
    common = 0
    if len(parts) > 1:
        while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
            common += 1
    out = []
    for p in parts:
        name = ".".join(p[common:])
        if len(name) > width:
            keep = width - 1
            name = name[: keep // 2] + "…" + name[len(name) - (keep - keep // 2) :]
        out.append(name)
    return out if len(set(out)) == len(out) else list(groups)
