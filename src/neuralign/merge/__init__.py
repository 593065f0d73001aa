"""Model merging: align networks' units, average them, recompute BatchNorm, optionally REPAIR.

>>> result = merge([model_a, model_b], train_set, method="correlation",
...                test_data=test_set, repair_stats=True)   # doctest: +SKIP
>>> result.model, result.evaluation                          # doctest: +SKIP
"""

from neuralign.merge.api import MergeResult, merge
from neuralign.merge.average import average_states
from neuralign.merge.repair import RepairReport, repair

__all__ = ["MergeResult", "RepairReport", "average_states", "merge", "repair"]
