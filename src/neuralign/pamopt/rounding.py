"""Rounding relaxed matrices to a permutation: Hungarian and Birkhoff–von Neumann candidates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from neuralign.pamopt.birkhoff import birkhoff_decomposition, round_to_permutation
from neuralign.perm import Permutation

__all__ = ["round_relaxed"]


def _perm_key(perm: Permutation) -> tuple[bytes, ...]:
    return tuple(p.numpy().tobytes() for p in perm.perms.values())


def round_relaxed(
    mats: Mapping[str, Tensor],
    previous: Permutation,
    score: Callable[[Permutation], float],
    *,
    samples: int = 0,
    seed: int = 0,
) -> tuple[Permutation, str, list[dict[str, Any]]]:
    """Turn relaxed matrices into the best-scoring permutation among candidates.

    Candidates: ``previous`` (always, so the result never scores worse than it), the
    Hungarian projection of every group (:func:`round_to_permutation`), and ``samples``
    permutations drawn per group from the Birkhoff–von Neumann decomposition
    :math:`\\tilde P \\approx \\sum_j w_j P_{\\sigma_j}` with probabilities :math:`\\propto w_j`
    (``torch.Generator`` seeded with ``seed``). Duplicates are scored once; ties keep the
    earlier candidate (previous, then Hungarian).

    Args:
        mats: Relaxed matrices by group.
        previous: The permutation before the P-step.
        score: ``score(perm) -> float``, lower is better.
        samples: Number of sampled candidates.
        seed: Seed of the sampling.

    Returns:
        ``(best permutation, its name, [{"name", "objective"}, ...])``.
    """
    candidates: list[tuple[str, Permutation]] = [
        ("previous", previous),
        ("hungarian", Permutation({g: round_to_permutation(m) for g, m in mats.items()})),
    ]
    if samples:
        gen = torch.Generator().manual_seed(seed)
        decomps: dict[str, tuple[Tensor, list[Tensor]]] = {}
        for g, m in mats.items():
            n = m.shape[0]
            terms = birkhoff_decomposition(m, max_terms=4 * n, tol=1e-7)
            if not terms:
                terms_perms = [round_to_permutation(m)]
                weights = torch.ones(1, dtype=torch.float64)
            else:
                terms_perms = [term.perm for term in terms]
                weights = torch.tensor([term.weight for term in terms], dtype=torch.float64)
            decomps[g] = (weights, terms_perms)
        for j in range(samples):
            perms: dict[str, Tensor] = {}
            for g, (weights, terms_perms) in decomps.items():
                idx = int(torch.multinomial(weights, 1, generator=gen))
                perms[g] = terms_perms[idx]
            candidates.append((f"sample{j}", Permutation(perms)))
    seen: dict[tuple[bytes, ...], float] = {}
    scored: list[dict[str, Any]] = []
    best: tuple[float, str, Permutation] | None = None
    for name, perm in candidates:
        key = _perm_key(perm)
        if key in seen:
            continue
        value = float(score(perm))
        seen[key] = value
        scored.append({"name": name, "objective": value})
        if best is None or value < best[0]:
            best = (value, name, perm)
    assert best is not None
    return best[2], best[1], scored
