"""Evaluation of a curve while it trains (the ``evaluate`` hook of ``train_curve``).

It lives here, not in :mod:`neuralign.curves`, because it needs BatchNorm recomputation and
path evaluation, which build on curves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from neuralign.curves.base import Curve
from neuralign.paths.bn import has_batchnorm, recompute_bn
from neuralign.paths.evaluate import evaluate_state

__all__ = ["curve_test_point"]


def curve_test_point(
    train_data: Iterable[Any],
    test_data: Iterable[Any],
    *,
    t: float = 0.5,
    bn_batches: int | None = 50,
) -> Callable[[Curve], dict[str, float]]:
    """An ``evaluate`` hook for :func:`~neuralign.curves.train_curve`: test metrics at ``t``.

    Args:
        train_data: ``(x, y)`` batches on which BatchNorm statistics of :math:`\\varphi(t)`
            are recomputed (the first ``bn_batches`` of them; ``None``: all).
        test_data: ``(x, y)`` batches evaluated at :math:`\\varphi(t)`.
        t: Where on the curve to test.
        bn_batches: Batches used for the BatchNorm recomputation.

    Returns:
        ``evaluate(curve) -> {"test_loss", "test_acc"}`` (accuracy in %).
    """

    def evaluate(curve: Curve) -> dict[str, float]:
        with torch.no_grad():
            state = curve.state_at(t)
        if has_batchnorm(curve.model):
            state = recompute_bn(curve.model, state, train_data, max_batches=bn_batches)
        loss, acc = evaluate_state(curve.model, state, test_data)
        return {"test_loss": loss, "test_acc": acc}

    return evaluate
