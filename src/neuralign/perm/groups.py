"""Group bookkeeping of permutation discovery: union-find over group ids, the members
(state-dict key, axis, indices) each group claims, pins and freezes.

See :mod:`neuralign.perm.trace` for how discovery uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import fx, nn

from neuralign.perm.rules.types import Feat, Info, Seg


@dataclass
class _Unsupported:
    node: str
    reason: str
    gids: list[int]
    module: str | None


@dataclass
class _GraphRecord:
    mode: str
    graph: fx.Graph
    infos: dict[fx.Node, Info] = field(default_factory=dict)
    kinds: dict[fx.Node, str] = field(default_factory=dict)
    # (group, input node, weight key, first row, bias key, units): projection taps
    proj_taps: list[tuple[int, fx.Node, str, int, str | None, int]] = field(default_factory=list)


class GroupBook:
    """Groups, their members and freezes; the state a :class:`~neuralign.perm.walker.Walker`
    fills while it interprets traced graphs."""

    def __init__(self, model: nn.Module, leaf: set[str]) -> None:
        self.model = model
        self.leaf = leaf
        self.modules = dict(model.named_modules())
        sd = model.state_dict(keep_vars=True)
        self.state_keys = set(sd)
        # Tensors registered under several names (aliased modules) must move together.
        by_id: dict[int, list[str]] = {}
        for k, v in sd.items():
            by_id.setdefault(id(v), []).append(k)
        self.aliases = {k: ks for ks in by_id.values() for k in ks}
        self.parent: list[int] = []
        self.gsize: list[int] = []
        self.gname: list[str] = []
        self.gblocks: list[int] = []  # block structure (GroupNorm, heads); 1: none
        self.block_links: list[tuple[int, int]] = []  # groups sharing a block permutation
        self.producers: dict[str, int] = {}
        # (key, axis) -> list of [start, inner, size, gid]
        self.claims: dict[tuple[str, int], list[tuple[int, int, int, int]]] = {}
        self.pins: list[tuple[str, int | None, int, int]] = []
        # block-diagonal members (grouped convolution inputs): (key, axis, gid, row blocks)
        self.block_members: list[tuple[str, int, int, int]] = []
        self.hard: dict[int, str] = {}
        self.unsupported_ops: list[_Unsupported] = []
        self.dead: set[int] = set()  # groups replaced by their parts (split_group)
        self.splits: dict[int, list[int]] = {}
        # modules with parameters that no rule knows (their parameters stay unpermuted)
        self.opaque: dict[str, str] = {}
        self._rec: _GraphRecord | None = None
        self._node: fx.Node | None = None

    # ------------------------------------------------------------------ union-find
    def find(self, g: int) -> int:
        """Root of group ``g``."""
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        """Tie groups ``a`` and ``b`` (they must share one permutation)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.gsize[ra] != self.gsize[rb]:
            self.freeze([ra, rb], "tied groups of different sizes")
            return
        ba, bb = self.gblocks[ra], self.gblocks[rb]
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        if ba != bb and 1 not in (ba, bb):
            self.freeze([lo], f"tied groups with different block structures ({ba} and {bb})")
        self.gblocks[lo] = max(ba, bb)

    def set_blocks(self, g: int, blocks: int, why: str) -> None:
        """Restrict group ``g`` to permutations mapping ``blocks`` consecutive blocks of
        units to blocks (``why`` names the op, for the freeze reason on a conflict)."""
        r = self.find(g)
        if blocks <= 1 or self.gblocks[r] == blocks:
            return
        if self.gblocks[r] != 1:
            self.freeze([r], f"{why} needs {blocks} blocks, another op {self.gblocks[r]}")
            return
        self.gblocks[r] = blocks

    def split_group(self, g: int, parts: int) -> list[int] | None:
        """Split a fresh group (one producer, nothing tied to it yet: a fused q/k/v
        projection) into ``parts`` consecutive groups; ``None`` if it cannot be split."""
        r = self.find(g)
        size = self.gsize[r]
        n = size // parts
        if r in self.splits:  # the same layer seen again (another mode's graph)
            new = self.splits[r]
            if len(new) != parts:
                return None
            self._rewrite_split(r, new, n)
            return new
        if size % parts or self.gblocks[r] != 1 or r in self.hard:
            return None
        if any(self.find(h) == r for h in range(len(self.parent)) if h != r):
            return None
        new = []
        for i in range(parts):
            h = len(self.parent)
            self.parent.append(h)
            self.gsize.append(n)
            self.gname.append(f"{self.gname[r]}.{'qkv'[i] if parts == 3 else i}")
            self.gblocks.append(1)
            new.append(h)
        for slot in self.claims.values():
            for s, i, sz, gid in list(slot):
                if self.find(gid) == r:
                    assert sz == size
                    slot.remove((s, i, sz, gid))
                    slot.extend((s + k * n * i, i, n, new[k]) for k in range(parts))
        self.dead.add(r)
        self.splits[r] = new
        self._rewrite_split(r, new, n)
        return new

    def _rewrite_split(self, r: int, new: list[int], n: int) -> None:
        """Earlier tensors of this graph that carry the whole group now carry its parts."""
        assert self._rec is not None
        for node, info in list(self._rec.infos.items()):
            if isinstance(info, Feat) and r in [self.find(x) for x in info.gids()]:
                segs: list[Seg] = []
                for seg in info.segs:
                    if seg.gid is not None and self.find(seg.gid) == r:
                        segs.extend(Seg(h, n, seg.inner) for h in new)
                    else:
                        segs.append(seg)
                self._rec.infos[node] = Feat(info.axis, tuple(segs))

    def proj_tap(
        self, gid: int, node: Any, weight: str, row: int, bias: str | None, size: int
    ) -> None:
        """Tap group ``gid`` as ``F.linear(node, weight[row:row+size], bias[...])``."""
        assert self._rec is not None
        if isinstance(node, fx.Node):
            self._rec.proj_taps.append((gid, node, weight, row, bias, size))

    def link_blocks(self, a: int, b: int) -> None:
        """Groups ``a`` and ``b`` (same number of blocks) share their block permutation."""
        self.block_links.append((a, b))

    def freeze(self, gids: Iterable[int], reason: str) -> None:
        """Leave groups unpermuted (sound whatever happens to them)."""
        for g in gids:
            self.hard.setdefault(g, reason)

    def producer(self, key: str | None, size: int, name: str) -> int:
        """The group started by the layer whose weight is ``key`` (one per weight: a layer
        called twice produces the same group)."""
        if key is not None and key in self.producers:
            return self.producers[key]
        g = len(self.parent)
        self.parent.append(g)
        self.gsize.append(size)
        self.gname.append(name)
        self.gblocks.append(1)
        if key is not None:
            self.producers[key] = g
        else:
            self.freeze([g], "its weight is not in the state dict")
        return g

    def member(
        self, gid: int | None, key: str | None, axis: int, start: int, inner: int, size: int
    ) -> None:
        """Record that indices of ``key``'s ``axis`` belong to group ``gid`` (``None``:
        they must never be permuted)."""
        if key is None:
            return
        if gid is not None and self.find(gid) in self.splits and size == self.gsize[gid]:
            parts = self.splits[self.find(gid)]
            n = size // len(parts)
            for i, h in enumerate(parts):
                self.member(h, key, axis, start + i * n * inner, inner, n)
            return
        for k in self.aliases.get(key, [key]):
            if gid is None:
                self.pins.append((k, axis, start, start + size * inner))
                continue
            slot = self.claims.setdefault((k, axis), [])
            end = start + size * inner
            for s, i, n, g in slot:
                if (s, i, n) == (start, inner, size):
                    self.union(g, gid)
                    break
                if s < end and start < s + n * i:
                    self.freeze([g, gid], f"{k} axis {axis} claimed with different layouts")
            else:
                slot.append((start, inner, size, gid))

    def block_member(self, gid: int, key: str | None, axis: int, blocks: int) -> None:
        """Record that ``key``'s ``axis`` holds the local unit index of the ``blocks``
        blocks of group ``gid``, row block ``j`` of axis 0 seeing block ``j`` (a grouped
        convolution's input axis)."""
        if key is None:
            return
        for k in self.aliases.get(key, [key]):
            entry = (k, axis, gid, blocks)
            if entry not in self.block_members:
                self.block_members.append(entry)

    def pin(self, key: str | None, axis: int | None = None) -> None:
        """Forbid permuting ``key`` (on ``axis``, or on every axis)."""
        if key is None:
            return
        for k in self.aliases.get(key, [key]):
            self.pins.append((k, axis, 0, 1 << 62))
