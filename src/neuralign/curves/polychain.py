"""Polygonal chains and the straight line (Garipov et al. 2018)."""

from __future__ import annotations

from typing import ClassVar

from neuralign.curves.base import Curve

__all__ = ["Line", "PolyChain", "polychain_coefficients"]


def polychain_coefficients(t: float, num_bends: int) -> list[float]:
    """Hat-function coefficients of a polygonal chain with ``num_bends`` vertices.

    .. math:: c_k(t) = \\max\\big(0,\\ 1 - |t(n-1) - k|\\big), \\qquad k = 0, \\dots, n-1,

    i.e. linear interpolation between consecutive bends placed at ``t = k / (n - 1)``.
    """
    s = t * (num_bends - 1)
    return [max(0.0, 1.0 - abs(s - k)) for k in range(num_bends)]


class PolyChain(Curve):
    """Polygonal chain through ``num_bends`` control points, equally spaced in ``t``.

    With ``num_bends=3`` this is the paper's "Polychain": two segments through one trainable
    midpoint (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of
    DNNs").
    """

    family: ClassVar[str] = "polychain"
    default_num_bends: ClassVar[int] = 3

    def _coefficients(self, t: float) -> list[float]:
        return polychain_coefficients(t, self.num_bends)


class Line(Curve):
    """The straight line :math:`\\varphi(t) = (1-t)\\theta_A + t\\theta_B` (no trainable point).

    Linear interpolation is the baseline path of every mode-connectivity study.
    """

    family: ClassVar[str] = "line"
    default_num_bends: ClassVar[int] = 2
    fixed_num_bends: ClassVar[int | None] = 2

    def _coefficients(self, t: float) -> list[float]:
        return [1.0 - t, t]
