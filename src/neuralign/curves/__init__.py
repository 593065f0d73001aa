"""Curves in weight space between two networks (Garipov et al. 2018; Tatro et al. 2020)."""

from neuralign.curves.base import (
    Curve,
    curve_families,
    curve_family,
    functional_forward,
    fused_combination,
    interpolated_keys,
    parameter_distance,
    validate_states,
)
from neuralign.curves.bezier import Bezier, bernstein
from neuralign.curves.config import CurveTrainConfig
from neuralign.curves.polychain import Line, PolyChain, polychain_coefficients
from neuralign.curves.train import CurveTrainResult, train_curve

__all__ = [
    "Bezier",
    "Curve",
    "CurveTrainConfig",
    "CurveTrainResult",
    "Line",
    "PolyChain",
    "bernstein",
    "curve_families",
    "curve_family",
    "functional_forward",
    "fused_combination",
    "interpolated_keys",
    "parameter_distance",
    "polychain_coefficients",
    "train_curve",
    "validate_states",
]
