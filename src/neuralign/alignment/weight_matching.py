"""Weight matching (Ainsworth et al., ICLR 2023, "Git Re-Basin"), on a discovered spec.

Data-free alignment: coordinate descent over the permutation groups. For group ``g``,

    S_g = Σ_{members (W, axis) of g} W_A[axis→rows] · (W_B with every *other* group's
          current permutation applied)[axis→rows]ᵀ

and the group's permutation becomes ``argmax_π Σ_i S_g[i, π(i)]``. Groups are visited in a
random order (seeded) and sweeps repeat until no group improves. BatchNorm running
statistics take no part in the cost (docs/method.md, Alignment).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import torch

from neuralign.alignment._lap import solve_family, solve_lap
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

    def cost_matrix(g: str) -> torch.Tensor:
        size = spec.groups[g].size
        s = torch.zeros(size, size, dtype=torch.float64)
        for m in spec.groups[g].members:
            if m.key not in by_key:
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
            old = sum(float(s[torch.arange(len(s)), perms[g]].sum()) for g, s in zip(family, costs))
            if plain:
                new_perms = [solve_lap(costs[0])]
            else:
                new_perms = solve_family(costs, spec.groups[family[0]].blocks)
            new = sum(float(s[torch.arange(len(s)), p].sum()) for s, p in zip(costs, new_perms))
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
