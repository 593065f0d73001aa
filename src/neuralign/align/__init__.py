"""Neuron alignment: activation correlation (the paper's Algorithm 1), weight matching, PAM."""

from neuralign.align._lap import solve_lap
from neuralign.align.api import METHODS, AlignmentResult, align
from neuralign.align.birkhoff import (
    BirkhoffTerm,
    birkhoff_decomposition,
    project_doubly_stochastic,
    round_to_permutation,
)
from neuralign.align.correlation import (
    CorrelationStats,
    correlation_of,
    correlation_statistics,
    match_correlation,
)
from neuralign.align.correlation_stats import CrossCorrelation, units_as_rows
from neuralign.align.pam import PAMConfig, PAMResult, PAMStep, pam
from neuralign.align.weight_matching import group_rows, permute_member, weight_matching

__all__ = [
    "METHODS",
    "AlignmentResult",
    "BirkhoffTerm",
    "CorrelationStats",
    "CrossCorrelation",
    "PAMConfig",
    "PAMResult",
    "PAMStep",
    "align",
    "birkhoff_decomposition",
    "correlation_of",
    "correlation_statistics",
    "group_rows",
    "match_correlation",
    "pam",
    "permute_member",
    "project_doubly_stochastic",
    "round_to_permutation",
    "solve_lap",
    "units_as_rows",
    "weight_matching",
]
