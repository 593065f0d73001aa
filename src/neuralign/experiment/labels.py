"""Display names of alignment variants and path kinds (report tables, figure legends)."""

from __future__ import annotations

__all__ = ["kind_label", "path_label", "variant_label"]

_VARIANTS = {
    "unaligned": "Unaligned",
    "correlation": "Aligned",
    "weight": "Weight-matched",
    "pam-unaligned": "PAM Unaligned",
    "pam-aligned": "PAM Aligned",
}
_KINDS = {"line": "line", "bezier": "Bezier curve", "polychain": "polygonal chain"}


def variant_label(variant: str) -> str:
    """Display name of an alignment variant."""
    return _VARIANTS.get(variant, variant)


def kind_label(kind: str) -> str:
    """Display name of a path kind."""
    return _KINDS.get(kind, kind)


def path_label(variant: str, kind: str) -> str:
    """Display name of the path ``variant``-``kind``, e.g. ``"Aligned Bezier curve"``."""
    return f"{variant_label(variant)} {kind_label(kind)}"
