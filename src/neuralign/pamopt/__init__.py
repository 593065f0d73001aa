"""PAM: permutations and a curve optimised jointly (Tatro et al. 2020, Sec. 3.3).

One floor above :mod:`neuralign.alignment` and :mod:`neuralign.curves`, which it combines.
The package is named ``pamopt`` so that the function :func:`neuralign.pam` shadows no module.
"""

from neuralign.pamopt.config import PAMConfig, scoring_subset
from neuralign.pamopt.core import PAMResult, PAMStep, pam

__all__ = ["PAMConfig", "PAMResult", "PAMStep", "pam", "scoring_subset"]
