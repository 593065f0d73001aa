"""Saving figures: atomically, as PNG and PDF, in a colour-blind-safe palette.

Every plotting function of neuralign writes through :func:`save_figure`, so a figure asked
for as ``x.png`` also appears as ``x.pdf`` (and the other way round), and a killed run never
leaves half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from neuralign.io.atomic import atomic_path

__all__ = ["MARKERS", "PALETTE", "companion_paths", "save_figure"]

#: Okabe & Ito (2008), "Color Universal Design": distinguishable with every common form of
#: colour blindness (black last).
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def companion_paths(out: str | os.PathLike[str]) -> list[Path]:
    """The files a figure is written to: ``out`` and its PNG/PDF twin (``x.png`` → ``x.pdf``)."""
    dest = Path(out)
    twin = {".png": ".pdf", ".pdf": ".png"}.get(dest.suffix.lower())
    return [dest] if twin is None else [dest, dest.with_suffix(twin)]


def save_figure(fig: Any, out: str | os.PathLike[str], dpi: int = 200) -> Path:
    """Write ``fig`` atomically to ``out`` and its PNG/PDF twin; close it; return ``out``."""
    try:
        for dest in companion_paths(out):
            fmt = dest.suffix.lstrip(".") or "png"
            with atomic_path(dest) as tmp:
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return Path(out)
