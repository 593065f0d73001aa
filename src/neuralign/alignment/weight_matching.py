"""Weight matching (Ainsworth et al., ICLR 2023, "Git Re-Basin"), on a discovered spec.

Data-free alignment: coordinate descent over the permutation groups. For group ``g``,

    S_g = Σ_{members (W, axis) of g} W_A[axis→rows] · (W_B with every *other* group's
          current permutation applied)[axis→rows]ᵀ

and the group's permutation becomes ``argmax_π Σ_i S_g[i, π(i)]``. Groups are visited in a
random order (seeded) and sweeps repeat until no group improves. BatchNorm running
statistics take no part in the cost (docs/method.md, Alignment).

A grouped convolution's weight has both axes in one linked family (its input and output
groups share the block permutation, docs/symmetry.md): its inner product is bilinear in the
two groups' within-block permutations. Such a family is solved block pair by block pair:
for A's block ``a`` against B's block ``b`` the within-block permutations of all the
family's groups are improved in turn (each one a linear assignment with the others fixed)
until the pair's score stops rising; the block permutation is the assignment over those
pair scores.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from neuralign.alignment._lap import solve_family, solve_lap
from neuralign.perm.apply import permute_block_diagonal
from neuralign.perm.spec import AxisMember, PermutationSpec


def group_rows(t: torch.Tensor, member: AxisMember, size: int) -> torch.Tensor:
    """View the block of ``t`` owned by a group as ``(size, -1)``: one row per unit."""
    block = t.narrow(member.axis, member.start, size * member.inner).movedim(member.axis, 0)
    return block.reshape(size, -1)


def permute_member(t: torch.Tensor, member: AxisMember, perm: torch.Tensor) -> torch.Tensor:
    """Apply ``perm`` (new unit i = old unit perm[i]) to one member axis of ``t``."""
    size = perm.numel()
    inner = member.inner
    idx = (perm.to(t.device)[:, None] * inner + torch.arange(inner, device=t.device)).reshape(-1)
    full = torch.arange(t.shape[member.axis], device=t.device)
    full[member.start : member.start + size * inner] = idx + member.start
    return t.index_select(member.axis, full)


def weight_matching(
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    *,
    parameter_keys: set[str] | None = None,
    init: Mapping[str, torch.Tensor] | None = None,
    max_sweeps: int = 100,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Match B's units to A's by weights alone.

    Args:
        state_a: reference state dict.
        state_b: state dict to permute.
        spec: the shared permutation spec.
        parameter_keys: keys that enter the cost (default: every floating entry that is not
            a BatchNorm running statistic).
        init: starting permutation per group (identity by default).
        max_sweeps: upper bound on sweeps over all groups.
        seed: order in which groups are visited.

    Returns:
        ``(perms, objective)``: the permutation per group and, per sweep, the sum over groups
        of the matched weight inner product at the moment each group was visited (in the last
        sweep, where nothing changes, it is the objective of the final permutation).
    """

    def counts(key: str) -> bool:
        if parameter_keys is not None:
            return key in parameter_keys
        return state_a[key].is_floating_point() and not key.endswith(
            ("running_mean", "running_var", "num_batches_tracked")
        )

    perms = {
        g: (init[g].clone() if init and g in init else torch.arange(grp.size))
        for g, grp in spec.groups.items()
    }
    by_key: dict[str, list[tuple[str, AxisMember]]] = defaultdict(list)
    for g, grp in spec.groups.items():
        for m in grp.members:
            if counts(m.key):
                by_key[m.key].append((g, m))
    wa = {k: state_a[k].detach().double() for k in by_key}
    wb = {k: state_b[k].detach().double() for k in by_key}

    coupled = _coupled_tensors(spec, by_key)

    def cost_matrix(g: str) -> torch.Tensor:
        size = spec.groups[g].size
        s = torch.zeros(size, size, dtype=torch.float64)
        for m in spec.groups[g].members:
            if m.key not in by_key or m.key in coupled:
                continue
            b = wb[m.key]
            for other_g, other_m in by_key[m.key]:
                if other_m is not m:
                    b = permute_member(b, other_m, perms[other_g])
            s += group_rows(wa[m.key], m, size) @ group_rows(b, m, size).T
        return s

    gen = torch.Generator().manual_seed(seed)
    # Structured groups are assigned block to block; linked groups (the query/key and value
    # groups of attention heads) together, sharing their block permutation.
    families = spec.families()
    plain = all(len(f) == 1 and spec.groups[f[0]].blocks == 1 for f in families)
    objective: list[float] = []
    for _ in range(max_sweeps):
        improved = False
        total = 0.0
        for i in torch.randperm(len(families), generator=gen).tolist():
            family = families[i]
            costs = [cost_matrix(g) for g in family]
            inside = [c for c in coupled.values() if c.row in family and c.col in family]
            old = sum(float(s[torch.arange(len(s)), perms[g]].sum()) for g, s in zip(family, costs))
            old += sum(c.value(wa, wb, perms) for c in inside)
            if plain:
                new_perms = [solve_lap(costs[0])]
            elif inside:
                new_perms = _solve_coupled(
                    family, costs, inside, spec.groups[family[0]].blocks, wa, wb
                )
            else:
                new_perms = solve_family(costs, spec.groups[family[0]].blocks)
            new = sum(float(s[torch.arange(len(s)), p].sum()) for s, p in zip(costs, new_perms))
            new += sum(c.value(wa, wb, dict(zip(family, new_perms))) for c in inside)
            if new > old + 1e-12 * max(1.0, abs(old)):
                for g, p in zip(family, new_perms):
                    perms[g] = p
                improved = True
                total += new
            else:
                total += old
        objective.append(total)
        if not improved:
            break
    return perms, objective


@dataclass(frozen=True)
class _Coupled:
    """A grouped convolution weight ``key``: axis 0 in group ``row``, the block-diagonal
    axis ``col_member`` in group ``col`` (both in one linked family, ``blocks`` blocks)."""

    key: str
    row: str
    col: str
    col_member: AxisMember
    blocks: int

    def value(
        self,
        wa: Mapping[str, torch.Tensor],
        wb: Mapping[str, torch.Tensor],
        perms: Mapping[str, torch.Tensor],
    ) -> float:
        """``<A, B permuted by the row and column groups>``."""
        b = permute_block_diagonal(wb[self.key], self.col_member, perms[self.col])
        b = b.index_select(0, perms[self.row].to(b.device))
        return float((wa[self.key] * b).sum())

    def tiles(self, w: torch.Tensor) -> torch.Tensor:
        """The weight as ``(blocks, rows per block, local columns, rest)``."""
        x = w.movedim(self.col_member.axis, 1)
        return x.reshape(self.blocks, x.shape[0] // self.blocks, x.shape[1], -1)


def _coupled_tensors(
    spec: PermutationSpec, by_key: Mapping[str, list[tuple[str, AxisMember]]]
) -> dict[str, _Coupled]:
    """The grouped convolution weights entering the cost, by key."""
    out: dict[str, _Coupled] = {}
    for col, m in spec.block_diagonal():
        if m.key not in by_key:
            continue
        row = next(g for g, r in by_key[m.key] if r.axis == 0 and r.row_blocks == 1)
        out[m.key] = _Coupled(m.key, row, col, m, m.row_blocks)
    return out


class _Pair:
    """The objective of one block pair (A's block ``a``, B's block ``b``) of a coupled
    family, as a function of the groups' within-block permutations (``local[i]``: A's
    local unit ``r`` of group ``i`` is matched to B's local unit ``local[i][r]``)."""

    def __init__(
        self,
        plain: list[torch.Tensor],
        coupled: list[tuple[int, int, torch.Tensor, torch.Tensor]],
    ) -> None:
        self.plain = plain  # per group: the s x s tile of its plain cost
        self.coupled = coupled  # (row group, column group, A's tile, B's tile)

    def tile(self, i: int, local: list[torch.Tensor]) -> torch.Tensor:
        """Group ``i``'s score matrix with the other groups' permutations fixed (the
        objective is linear in each group's permutation)."""
        s = self.plain[i].clone()
        for row, col, xa, xb in self.coupled:  # (rows, cols, rest)
            if row == i:
                s += torch.einsum("rck,pck->rp", xa, xb[:, local[col]])
            if col == i:
                s += torch.einsum("rck,rpk->cp", xa, xb[local[row]])
        return s

    def score(self, local: list[torch.Tensor]) -> float:
        total = sum(float(t[torch.arange(len(p)), p].sum()) for t, p in zip(self.plain, local))
        for row, col, xa, xb in self.coupled:
            total += float((xa * xb[local[row]][:, local[col]]).sum())
        return total

    def solve(self, max_rounds: int) -> tuple[float, list[torch.Tensor]]:
        """Coordinate ascent from each group's plain assignment."""
        local = [solve_lap(t) for t in self.plain]
        value = self.score(local)
        for _ in range(max_rounds):
            for i in range(len(local)):
                local[i] = solve_lap(self.tile(i, local))
            new = self.score(local)
            if new <= value + 1e-12 * max(1.0, abs(value)):
                return max(value, new), local
            value = new
        return value, local


def _solve_coupled(
    family: list[str],
    costs: list[torch.Tensor],
    coupled: list[_Coupled],
    blocks: int,
    wa: Mapping[str, torch.Tensor],
    wb: Mapping[str, torch.Tensor],
    max_rounds: int = 20,
) -> list[torch.Tensor]:
    """Assign a linked family whose groups are coupled by grouped convolution weights.

    For every pair (block ``a`` of A, block ``b`` of B) the within-block permutations of the
    family's groups are improved in turn (one linear assignment per group, the others
    fixed; the plain cost tile plus the coupled weights' terms) until the pair's score stops
    rising; the block permutation maximises the sum of the pair scores.

    Returns:
        One permutation per group of ``family``, as :func:`solve_family` does.
    """
    index = {g: i for i, g in enumerate(family)}
    sizes = [c.shape[0] // blocks for c in costs]
    tiles = [
        c.reshape(blocks, s, blocks, s).permute(0, 2, 1, 3) for c, s in zip(costs, sizes)
    ]  # [a, b, r, r']
    ta = {c.key: c.tiles(wa[c.key]) for c in coupled}
    tb = {c.key: c.tiles(wb[c.key]) for c in coupled}
    rating = torch.zeros(blocks, blocks, dtype=torch.float64)
    best: dict[tuple[int, int], list[torch.Tensor]] = {}
    for a in range(blocks):
        for b in range(blocks):
            pair = _Pair(
                [t[a, b] for t in tiles],
                [(index[c.row], index[c.col], ta[c.key][a], tb[c.key][b]) for c in coupled],
            )
            value, local = pair.solve(max_rounds)
            rating[a, b] = value
            best[a, b] = local
    pi = solve_lap(rating)
    return [
        (pi[:, None] * s + torch.stack([best[j, int(pi[j])][i] for j in range(blocks)])).reshape(-1)
        for i, s in enumerate(sizes)
    ]
