"""The paper's layer-wise figure: mean matched correlation per group before/after alignment."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neuralign.io.atomic import atomic_path  # noqa: E402


def plot_correlation(
    groups: Sequence[str],
    before: Mapping[str, Sequence[float]] | Mapping[str, float],
    after: Mapping[str, Sequence[float]] | Mapping[str, float],
    out: str | os.PathLike[str],
    *,
    title: str = "Mean correlation of matched units",
    dpi: int = 200,
) -> Path:
    """Plot the mean matched correlation per group (in forward order), before and after.

    Values may be single floats or lists (one per pair): lists are drawn as mean ± std.

    Returns:
        The path written (PNG).
    """
    import numpy as np

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
        ("Unaligned (identity)", before, "tab:red", "o"),
        ("Aligned", after, "tab:blue", "s"),
    ):
        m, s = stats(d)
        ax.plot(x, m, marker=marker, color=color, label=label, lw=1.5, ms=4)
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, lw=0)
    ax.set_xlabel("Layer (permutation group, input to output)")
    ax.set_ylabel("Mean correlation of matched units")
    ax.set_title(title)
    ax.set_xticks(x)
    if len(groups) <= 16:
        ax.set_xticklabels(groups, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    path = Path(out)
    try:
        with atomic_path(path) as tmp:  # a killed run never leaves half a PNG
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
