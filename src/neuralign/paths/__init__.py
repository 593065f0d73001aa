"""Evaluation of paths in weight space: BN recomputation, metrics, planes and plots."""

from neuralign.paths.aggregate import AggregatedPath, aggregate
from neuralign.paths.bn import batchnorm_modules, has_batchnorm, recompute_bn
from neuralign.paths.evaluate import PathLike, evaluate_path, evaluate_state, resolve_ts
from neuralign.paths.metrics import BN_MODES, METRICS, PathResult
from neuralign.paths.monitor import curve_test_point
from neuralign.paths.plane import PlaneResult, evaluate_plane
from neuralign.paths.plots import plot_paths, plot_plane
from neuralign.paths.robust import BN_SOURCES, evaluate_path_robust, evaluate_state_robust

__all__ = [
    "BN_MODES",
    "BN_SOURCES",
    "METRICS",
    "AggregatedPath",
    "PathLike",
    "PathResult",
    "PlaneResult",
    "aggregate",
    "batchnorm_modules",
    "curve_test_point",
    "evaluate_path",
    "evaluate_path_robust",
    "evaluate_plane",
    "evaluate_state",
    "evaluate_state_robust",
    "has_batchnorm",
    "plot_paths",
    "plot_plane",
    "recompute_bn",
    "resolve_ts",
]
