"""Apply permutations (hard or relaxed) to state dicts and modules.

Convention (see :mod:`neuralign.perm.permutation`): on every member axis of group ``g``,
new unit ``i`` = old unit ``perm[i]``; for a dense matrix ``M``, ``new = M @ old`` with the
units of the member's block (``start + i * inner + r``) as the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from neuralign.perm.permutation import Permutation, PermutationError
from neuralign.perm.spec import AxisMember, PermutationSpec

__all__ = [
    "apply_permutation",
    "apply_soft_permutation",
    "check_soft_supported",
    "permute_block_diagonal",
]


def _index(length: int, m: AxisMember, perm: torch.Tensor, device: torch.device) -> torch.Tensor:
    n = perm.numel()
    idx = torch.arange(length, device=device)
    r = torch.arange(m.inner, device=device)
    block = m.start + perm.to(device)[:, None] * m.inner + r[None, :]
    idx[m.start : m.start + n * m.inner] = block.reshape(-1)
    return idx


def permute_block_diagonal(t: torch.Tensor, m: AxisMember, perm: torch.Tensor) -> torch.Tensor:
    """Apply a structured permutation to a block-diagonal member (a grouped convolution's
    input axis, ``m.row_blocks = b``), *before* axis 0 is permuted.

    ``perm`` maps block ``sigma[j]`` of the group to block ``j`` and reorders it by
    ``within[j]`` (``perm[j*s + r] = sigma[j]*s + within[j][r]``). The rows of block
    ``sigma[j]`` of axis 0 read the units of input block ``sigma[j]``, which after the
    permutation sit in block ``j`` in the order ``within[j]``: their columns (the local
    index) are reordered by ``within[j]``. Axis 0 itself is permuted by the linked group of
    the convolution's outputs (same ``sigma``), which moves those rows to block ``j``.
    """
    b = m.row_blocks
    n = perm.numel()
    s = n // b
    p = perm.to(t.device).view(b, s)
    sigma = p[:, 0] // s
    local = p % s  # local[j]: within-block order of new block j
    cols = torch.empty_like(local)
    cols[sigma] = local  # old row block sigma[j] takes within[j]
    x = t.movedim(m.axis, 1)
    rows, rest = x.shape[0], x.shape[2:]
    x = x.reshape(b, rows // b, s, *rest)
    idx = cols.view(b, 1, s, *([1] * len(rest))).expand_as(x)
    y = torch.gather(x, 2, idx).reshape(rows, s, *rest)
    return y.movedim(1, m.axis)


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
    # Block-diagonal members (grouped convolutions) first: their column order depends on the
    # row block, read before axis 0 is permuted (permute_block_diagonal).
    for name, m in spec.block_diagonal():
        p = perm.perms.get(name)
        if p is not None:
            out[m.key] = permute_block_diagonal(out[m.key], m, p)
    for g in spec.groups.values():
        p = perm.perms.get(g.name)
        if p is None:
            continue
        for m in g.members:
            if m.row_blocks > 1:
                continue
            t = out[m.key]
            out[m.key] = t.index_select(m.axis, _index(t.shape[m.axis], m, p, t.device))
    return out


def check_soft_supported(spec: PermutationSpec, groups: Iterable[str] | None = None) -> None:
    """Refuse relaxed (doubly-stochastic) application to the groups of a grouped
    convolution: a dense mixing matrix mixes channels across the convolution's groups,
    which its block-diagonal weight cannot express.

    Args:
        spec: The spec.
        groups: The groups to be relaxed (default: all).

    Raises:
        PermutationError: Naming the groups and the convolution weights.
    """
    wanted = set(spec.groups) if groups is None else set(groups)
    keys = {m.key for _, m in spec.block_diagonal()}
    bad: dict[str, str] = {}
    for g in spec.groups.values():
        for m in g.members:
            if g.name in wanted and m.key in keys:
                bad.setdefault(g.name, m.key)
    if bad:
        listed = ", ".join(f"{g} ({k})" for g, k in bad.items())
        raise PermutationError(
            "relaxed (soft) permutations are not defined for the input and output channels "
            f"of grouped convolutions: {listed}. A doubly-stochastic matrix mixes channels "
            "across the convolution's groups, which its block-diagonal weight cannot "
            "express. Align such models with correlation or weight matching, or freeze "
            "these groups (discover_spec(..., freeze=[...])) for PAM."
        )


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
        PermutationError: If a matrix has the wrong shape, names an unknown group, or is
            given for a group of a grouped convolution (:func:`check_soft_supported`).
    """
    spec.validate(state_dict)
    check_soft_supported(spec, mats)
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
