"""Neuron alignment: activation correlation (the paper's Algorithm 1) and weight matching.

PAM (joint permutation and curve optimisation) lives one floor up, in :mod:`neuralign.pamopt`.
"""

from neuralign.alignment.api import METHODS, AlignmentResult, align
from neuralign.alignment.correlation import correlation_statistics, match_correlation
from neuralign.alignment.weight_matching import weight_matching

__all__ = [
    "METHODS",
    "AlignmentResult",
    "align",
    "correlation_statistics",
    "match_correlation",
    "weight_matching",
]
