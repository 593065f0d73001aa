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


def solve_family(scores: list[torch.Tensor], blocks: int) -> list[torch.Tensor]:
    """Jointly assign groups that share one block structure (GroupNorm groups, attention
    heads) and, when there are several, one block permutation (linked groups).

    Each score matrix (``n x n``, ``n = blocks * s``) is cut into ``s x s`` tiles; tile
    ``(a, b)`` rates matching block ``b`` of B onto block ``a`` of A by its best within-block
    assignment. The block permutation maximises the sum of those ratings over the family,
    then each block is matched within. With ``blocks == 1`` this is :func:`solve_lap` per
    group (and exact in every case: a block-to-block permutation decomposes this way).

    Returns:
        One permutation per score matrix (``p[j*s + r] = pi[j]*s + within_j[r]``).
    """
    if blocks == 1:
        return [solve_lap(sc) for sc in scores]
    rating = torch.zeros(blocks, blocks, dtype=torch.float64)
    within: list[dict[tuple[int, int], torch.Tensor]] = []
    for sc in scores:
        s = sc.shape[0] // blocks
        rows = torch.arange(s)
        tiles = sc.detach().to("cpu", torch.float64).reshape(blocks, s, blocks, s)
        best: dict[tuple[int, int], torch.Tensor] = {}
        for a in range(blocks):
            for b in range(blocks):
                tile = tiles[a, :, b, :]
                p = solve_lap(tile) if s > 1 else torch.zeros(1, dtype=torch.int64)
                best[a, b] = p
                rating[a, b] += tile[rows, p].sum()
        within.append(best)
    pi = solve_lap(rating)
    out = []
    for sc, best in zip(scores, within):
        s = sc.shape[0] // blocks
        p = pi[:, None] * s + torch.stack([best[j, int(pi[j])] for j in range(blocks)])
        out.append(p.reshape(-1).to(sc.device))
    return out
