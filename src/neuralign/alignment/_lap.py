"""Linear assignment: the permutation that maximises a matched score."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def solve_lap(score: torch.Tensor) -> torch.Tensor:
    """Return ``perm`` maximising ``sum_i score[i, perm[i]]`` (int64, on ``score``'s device).

    ``score[i, j]`` rates putting unit ``j`` of model B at position ``i`` (model A's unit).
    Non-finite scores are treated as the worst possible match.
    """
    s = score.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(s).all():
        s = np.where(np.isfinite(s), s, np.nanmin(np.where(np.isfinite(s), s, np.inf)) - 1.0)
    rows, cols = linear_sum_assignment(s, maximize=True)
    perm = np.empty(s.shape[0], dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm).to(score.device)
