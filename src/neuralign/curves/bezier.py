"""Bezier curves (Garipov et al. 2018; Tatro et al. 2020)."""

from __future__ import annotations

from math import comb
from typing import ClassVar

from neuralign.curves.base import Curve

__all__ = ["Bezier", "bernstein"]


def bernstein(t: float, num_bends: int) -> list[float]:
    """Bernstein basis of degree ``num_bends - 1`` at ``t``.

    .. math:: c_k(t) = \\binom{n-1}{k}\\, t^k (1-t)^{n-1-k}, \\qquad k = 0, \\dots, n-1.

    Exact at the endpoints: ``bernstein(0, n) == [1, 0, ..., 0]`` and
    ``bernstein(1, n) == [0, ..., 0, 1]`` (Python's ``0.0 ** 0 == 1.0``).
    """
    d = num_bends - 1
    return [comb(d, k) * t**k * (1.0 - t) ** (d - k) for k in range(num_bends)]


class Bezier(Curve):
    """Bezier curve :math:`\\varphi(t) = \\sum_k \\binom{n-1}{k} t^k (1-t)^{n-1-k}\\theta^{(k)}`.

    The paper's curve is the quadratic one (``num_bends=3``, one trainable midpoint):
    :math:`\\varphi(t) = (1-t)^2\\theta_A + 2t(1-t)\\theta_{mid} + t^2\\theta_B`
    (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs";
    Tatro et al. 2020, "Optimizing Mode Connectivity via Neuron Alignment").

    Example:
        >>> curve = Bezier(model_a, model_b, num_bends=3)  # doctest: +SKIP
        >>> logits = curve(x, 0.5)  # doctest: +SKIP
    """

    family: ClassVar[str] = "bezier"
    default_num_bends: ClassVar[int] = 3

    def _coefficients(self, t: float) -> list[float]:
        return bernstein(t, self.num_bends)
