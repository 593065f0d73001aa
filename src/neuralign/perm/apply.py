"""Apply permutations (hard or relaxed) to state dicts and modules.

Convention (see :mod:`neuralign.perm.permutation`): on every member axis of group ``g``,
new unit ``i`` = old unit ``perm[i]``; for a dense matrix ``M``, ``new = M @ old`` with the
units of the member's block (``start + i * inner + r``) as the rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from neuralign.perm.permutation import Permutation, PermutationError
from neuralign.perm.spec import AxisMember, PermutationSpec

__all__ = ["apply_permutation", "apply_soft_permutation"]


def _index(length: int, m: AxisMember, perm: torch.Tensor, device: torch.device) -> torch.Tensor:
    n = perm.numel()
    idx = torch.arange(length, device=device)
    r = torch.arange(m.inner, device=device)
    block = m.start + perm.to(device)[:, None] * m.inner + r[None, :]
    idx[m.start : m.start + n * m.inner] = block.reshape(-1)
    return idx


def apply_permutation(
    state_dict: Mapping[str, torch.Tensor], spec: PermutationSpec, perm: Permutation
) -> dict[str, torch.Tensor]:
    """Return a new state dict with ``perm`` applied to every member axis of ``spec``.

    The input is never mutated; entries not in the spec are shared as-is. Groups of the spec
    missing from ``perm`` are left unpermuted.

    Args:
        state_dict: Keys as in ``model.state_dict()``.
        spec: The permutation spec of the model.
        perm: One index tensor per group (new unit ``i`` = old unit ``perm[i]``).

    Returns:
        The permuted state dict (same keys, same order).

    Raises:
        PermutationError: If ``perm`` does not fit ``spec``.
        SpecError: If ``spec`` does not fit ``state_dict``.
    """
    perm.check(spec)
    spec.validate(state_dict)
    out = dict(state_dict)
    for g in spec.groups.values():
        p = perm.perms.get(g.name)
        if p is None:
            continue
        for m in g.members:
            t = out[m.key]
            out[m.key] = t.index_select(m.axis, _index(t.shape[m.axis], m, p, t.device))
    return out


def apply_soft_permutation(
    state_dict: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    mats: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Apply dense ``n x n`` matrices per group (differentiable; used by PAM).

    On every member axis, the group's block of units is replaced by ``M @ block`` (units as
    rows, the ``inner`` entries of a unit and all other axes as columns). With one-hot
    matrices (:meth:`Permutation.matrices`) this equals :func:`apply_permutation`. Gradients
    flow to both ``mats`` and the state tensors.

    Args:
        state_dict: Keys as in ``model.state_dict()``.
        spec: The permutation spec.
        mats: Matrices by group name (groups missing are left unchanged).

    Returns:
        A new state dict; the inputs are not mutated.

    Raises:
        PermutationError: If a matrix has the wrong shape or names an unknown group.
    """
    spec.validate(state_dict)
    for name, mat in mats.items():
        if name not in spec.groups:
            raise PermutationError(f"group {name!r} is not in the spec")
        n = spec.groups[name].size
        if tuple(mat.shape) != (n, n):
            raise PermutationError(f"group {name!r}: matrix {tuple(mat.shape)}, need ({n}, {n})")
    out = dict(state_dict)
    for g in spec.groups.values():
        if g.name not in mats:
            continue
        mat = mats[g.name]
        n = g.size
        for m in g.members:
            t = out[m.key]
            x = t.movedim(m.axis, 0)
            end = m.start + n * m.inner
            block = x[m.start : end].reshape(n, m.inner, *x.shape[1:])
            mixed = torch.tensordot(mat.to(dtype=t.dtype, device=t.device), block, dims=([1], [0]))
            y = torch.cat([x[: m.start], mixed.reshape(n * m.inner, *x.shape[1:]), x[end:]], 0)
            out[m.key] = y.movedim(0, m.axis)
    return out
