"""PAM: permutations and a curve optimised jointly (Tatro et al. 2020).

One floor above :mod:`neuralign.alignment` and :mod:`neuralign.curves`, which it combines.
The package is named ``pamopt`` so that the function :func:`neuralign.pam` shadows no module.

Modules: :mod:`~neuralign.pamopt.config` (:class:`PAMConfig`),
:mod:`~neuralign.pamopt.objective`, :mod:`~neuralign.pamopt.pstep` (the P-step),
:mod:`~neuralign.pamopt.rounding` with :mod:`~neuralign.pamopt.birkhoff`,
:mod:`~neuralign.pamopt.loop` (:func:`pam`, the outer loop), :mod:`~neuralign.pamopt.resume`
(the checkpoint folder) and :mod:`~neuralign.pamopt.results`.
"""

from neuralign.pamopt.config import PAMConfig, scoring_subset
from neuralign.pamopt.loop import pam
from neuralign.pamopt.results import PAMResult, PAMStep, changed_fraction

__all__ = ["PAMConfig", "PAMResult", "PAMStep", "changed_fraction", "pam", "scoring_subset"]
