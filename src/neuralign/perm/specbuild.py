"""Turning the group bookkeeping into a :class:`~neuralign.perm.spec.PermutationSpec`:
resolving pins, naming groups, members, links and activation taps."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from torch import nn

from neuralign.errors import ConfigError, UnsupportedOpError
from neuralign.perm.fxtrace import node_shape
from neuralign.perm.groups import GroupBook, _GraphRecord, _Unsupported
from neuralign.perm.rules.types import Feat
from neuralign.perm.spec import AxisMember, Group, PermutationSpec, Tap

log = logging.getLogger("neuralign.perm.trace")  # one logger for discovery


_VALUE_KINDS = {"producer", "perchannel", "norm", "act", "merge"}
_CHAIN_KINDS = {"norm", "act"}


class SpecBuilder(GroupBook):
    """Builds the spec from the recorded groups (the results half of the walker)."""

    # ------------------------------------------------------------------ results
    def _resolve_pins(self) -> None:
        for (key, axis), slot in self.claims.items():
            for s, i, n, g in slot:
                for pk, pax, lo, hi in self.pins:
                    if pk == key and (pax is None or pax == axis) and lo < s + n * i and s < hi:
                        self.freeze([g], f"{key} axis {axis} must stay fixed")
        for key, axis, g, _b in self.block_members:
            if (key, axis) in self.claims:
                self.freeze([g], f"{key} axis {axis} claimed with different layouts")
            for pk, pax, _lo, _hi in self.pins:
                if pk == key and (pax is None or pax == axis):
                    self.freeze([g], f"{key} axis {axis} must stay fixed")

    def _names(self, roots: list[int]) -> dict[int, str]:
        """Name groups after their producing layer; a group with several producers (a
        residual stream, a shared layer) after the prefix most of them share + ".residual"."""
        prods: dict[int, list[str]] = {r: [] for r in roots}
        for g in range(len(self.parent)):
            if self.find(g) in prods:
                prods[self.find(g)].append(self.gname[g])
        names: dict[int, str] = {}
        used: Counter[str] = Counter()
        linked = {self.find(g) for pair in self.block_links for g in pair}
        for r in roots:
            ps = prods[r]
            if len(ps) == 1:
                base = ps[0]
            else:
                prefix = ""
                depth = 1
                while True:
                    counts = Counter(
                        ".".join(p.split(".")[:depth]) for p in ps if p.count(".") >= depth - 1
                    )
                    best, n = counts.most_common(1)[0] if counts else ("", 0)
                    if n * 2 <= len(ps) or best.count(".") != depth - 1 or best == prefix:
                        break
                    prefix = best
                    depth += 1
                # q and k projections share their units: "<attention>.qk"
                base = f"{prefix or ps[0]}.{'qk' if r in linked else 'residual'}"
            used[base] += 1
            names[r] = base if used[base] == 1 else f"{base}#{used[base]}"
        return names

    def build(self, records: list[_GraphRecord], freeze: Sequence[str]) -> PermutationSpec:
        """Resolve unions and freezes into a :class:`PermutationSpec`."""
        self._resolve_pins()
        roots = sorted({self.find(g) for g in range(len(self.parent))} - self.dead)
        names = self._names(roots)
        by_name = {v: k for k, v in names.items()}
        unknown = [n for n in freeze if n not in by_name]
        if unknown:
            raise ConfigError(
                f"freeze names unknown groups {unknown}; groups are: {sorted(by_name)}"
            )
        reasons: dict[int, str] = {}
        for g, why in self.hard.items():
            reasons.setdefault(self.find(g), why)
        for n in freeze:
            reasons.setdefault(by_name[n], "frozen by freeze=")
        frozen = set(reasons)
        failing = []
        seen: set[tuple[str, str]] = set()
        for op in self.unsupported_ops:
            involved = sorted({self.find(g) for g in op.gids} - frozen)
            if involved and (op.node, op.reason) not in seen:  # once, not once per mode
                seen.add((op.node, op.reason))
                failing.append((op, [names[r] for r in involved]))
        if failing:
            raise UnsupportedOpError(_unsupported_message(failing, self.modules))
        for op in self.unsupported_ops:
            for g in op.gids:
                reasons.setdefault(self.find(g), f"{op.reason} ({op.node})")
        frozen = set(reasons)
        kept = [r for r in roots if r not in frozen]
        for r in roots:
            if r in frozen:
                log.debug("group %s frozen: %s", names[r], reasons[r])
        members: dict[int, list[AxisMember]] = {r: [] for r in kept}
        for (key, axis), slot in self.claims.items():
            for s, i, _n, g in slot:
                r = self.find(g)
                if r in members:
                    m = AxisMember(key, axis, s, i)
                    if m not in members[r]:
                        members[r].append(m)
        for key, axis, g, b in self.block_members:
            r = self.find(g)
            if r in members:
                m = AxisMember(key, axis, 0, 1, b)
                if m not in members[r]:
                    members[r].append(m)
        taps = self._taps(records, set(kept))
        links = self._links(set(kept), frozen, names, reasons)
        kept = [r for r in kept if r not in reasons]
        groups: dict[str, Group] = {}
        for r in kept:
            groups[names[r]] = Group(
                names[r],
                self.gsize[r],
                tuple(members[r]),
                tuple(taps[r]),
                blocks=self.gblocks[r],
                link=links.get(r),
            )
        spec = PermutationSpec(groups)
        spec.meta["frozen"] = {names[r]: reasons[r] for r in roots if r in reasons}
        spec.meta["frozen_sizes"] = {names[r]: self.gsize[r] for r in roots if r in reasons}
        spec.meta["opaque_modules"] = dict(self.opaque)
        return spec

    def _links(
        self, kept: set[int], frozen: set[int], names: dict[int, str], reasons: dict[int, str]
    ) -> dict[int, str]:
        """Link labels of groups sharing a block permutation (named after the first). A
        linked set with a frozen member, or whose members disagree on the number of blocks,
        is frozen whole (its block permutation cannot move)."""
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            parent.setdefault(x, x)
            while parent[x] != x:
                x = parent[x]
            return x

        for a, b in self.block_links:
            ra, rb = find(self.find(a)), find(self.find(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        sets: dict[int, list[int]] = {}
        for g in parent:
            sets.setdefault(find(g), []).append(g)
        out: dict[int, str] = {}
        for members in sets.values():
            members = sorted(members)
            blocks = {self.gblocks[g] for g in members}
            bad = [g for g in members if g in frozen or g not in kept]
            if bad or len(blocks) != 1:
                why = (
                    f"linked to frozen group {names[bad[0]]}"
                    if bad
                    else "linked groups disagree on their blocks"
                )
                for g in members:
                    if g not in frozen and g in kept:
                        reasons.setdefault(g, why)
                continue
            for g in members:
                out[g] = names[members[0]]
        return out

    def _taps(self, records: list[_GraphRecord], kept: set[int]) -> dict[int, list[Tap]]:
        """Place taps: a node carrying a group is a tap when it holds fresh unit values (a
        layer, norm, activation or merge output), no norm/activation continues from it (so a
        conv-BN-ReLU chain is tapped after the ReLU), and it does not feed only merges (a
        residual branch or projection output before its ``add`` is not tapped; the stream
        is tapped after each block's final activation, and at the stem). Branch outputs
        entering a ``cat`` are tapped in their own group. Flattened units are not tapped.
        """
        taps: dict[int, list[Tap]] = {r: [] for r in kept}
        for rec in records:
            for gid, node, weight, row, bias, size in rec.proj_taps:
                r = self.find(gid)
                if r in kept:
                    taps[r].append(
                        Tap(
                            node=node.name,
                            module=str(node.target) if node.op == "call_module" else None,
                            start=0,
                            size=size,
                            pre_node=node.name,
                            pre_module=str(node.target) if node.op == "call_module" else None,
                            dim=len(node_shape(node) or (0, 0)) - 1,
                            mode=rec.mode,
                            proj=weight,
                            proj_start=row,
                            proj_bias=bias,
                        )
                    )
            for node, info in rec.infos.items():
                kind = rec.kinds.get(node, "other")
                if not isinstance(info, Feat) or kind not in _VALUE_KINDS:
                    continue
                users = list(node.users)
                if any(rec.kinds.get(u) in _CHAIN_KINDS for u in users):
                    continue
                if users and all(rec.kinds.get(u) == "merge" for u in users):
                    continue
                pre = node
                if kind == "act":
                    for a in node.all_input_nodes:
                        if isinstance(rec.infos.get(a), Feat):
                            pre = a
                            break
                for start, seg in info.offsets():
                    if seg.gid is None or seg.inner != 1:
                        continue
                    r = self.find(seg.gid)
                    if r not in kept:
                        continue
                    taps[r].append(
                        Tap(
                            node=node.name,
                            module=str(node.target) if node.op == "call_module" else None,
                            start=start,
                            size=seg.size,
                            pre_node=pre.name,
                            pre_module=str(pre.target) if pre.op == "call_module" else None,
                            dim=info.axis,
                            mode=rec.mode,
                        )
                    )
        return taps


def _unsupported_message(
    failing: list[tuple[_Unsupported, list[str]]], modules: dict[str, nn.Module]
) -> str:
    """One error for every op that meets a permuted tensor: the first op in full, and when
    several instances of one module class fail alike, that class as the leaf to suggest."""
    op, need = failing[0]
    cls = type(modules[op.module]).__name__ if op.module in modules else None
    alike = [
        o
        for o, _ in failing
        if o.reason == op.reason and o.module in modules and type(modules[o.module]).__name__ == cls
    ]
    all_need = list(dict.fromkeys(n for _, ns in failing for n in ns))
    if cls is not None and len({o.module for o in alike}) > 1:
        where = sorted({str(o.module) for o in alike})
        leaf = (
            f"leaf_modules=[{cls}] (the class: all {len(where)} instances {', '.join(where[:4])}"
            f"{', ...' if len(where) > 4 else ''} fail alike; they become opaque and their "
            "parameters stay unpermuted)"
        )
    elif op.module:
        leaf = (
            f"leaf_modules=[{op.module!r}] (treat the enclosing {cls or 'module'} as opaque; "
            "its parameters stay unpermuted)"
        )
    else:
        leaf = "leaf_modules=[...] (treat the enclosing module as opaque)"
    more = f" ({len(failing) - 1} more ops fail too)" if len(failing) > 1 else ""
    return (
        f"cannot infer the channel permutation through {op.node}: {op.reason}{more}. "
        f"Ways out: freeze=[{', '.join(map(repr, all_need))}] (keep those units unpermuted), "
        f"{leaf}, or a hand-written spec (PermutationSpec.from_axes)."
    )
