"""Discover the permutation symmetry of a network by tracing it with ``torch.fx``.

The model is traced symbolically (once per mode: ``forward`` may branch on
``self.training``, e.g. GoogLeNet's auxiliary heads), shapes are propagated with the example
input, and every node is interpreted by the op table of :mod:`neuralign.perm._rules`. Each
tensor carries the layout of its channel axis as segments of permutation groups. Layers with
weights start groups; elementwise ops between permuted tensors tie groups (union-find), so a
residual stream becomes one group; a parameter claimed by two groups ties them (a shared
layer); anything reaching a network output, meeting a fixed tensor, or crossing an op the table
cannot reason about is frozen (left unpermuted, i.e. dropped from the spec).

Discovery is sound by construction and, by default, checked: a random permutation of every
group must leave the outputs unchanged in eval and train mode
(:func:`neuralign.perm.verify.verify_spec`).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from neuralign.errors import ConfigError, UnsupportedOpError
from neuralign.perm._rules import FIXED, Call, Feat, Heads, Info, Param, Seg, Split, lookup_rule
from neuralign.perm.spec import AxisMember, Group, PermutationSpec, Tap, coverage
from neuralign.perm.verify import verify_spec

__all__ = ["LeafSpec", "Walker", "discover_spec", "trace_model"]

log = logging.getLogger(__name__)

#: Module classes or qualified module names to treat as opaque leaves.
LeafSpec = Sequence[type[nn.Module] | str]

_VALUE_KINDS = {"producer", "perchannel", "norm", "act", "merge"}
_CHAIN_KINDS = {"norm", "act"}


class _Tracer(fx.Tracer):
    """fx tracer that also treats the caller's ``leaf_modules`` as leaves."""

    def __init__(self, leaf_types: tuple[type[nn.Module], ...], leaf_names: set[str]) -> None:
        super().__init__()
        self._leaf_types = leaf_types
        self._leaf_names = leaf_names

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_names or isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _split_leaves(leaf_modules: LeafSpec) -> tuple[tuple[type[nn.Module], ...], set[str]]:
    types = tuple(t for t in leaf_modules if isinstance(t, type))
    names = {t for t in leaf_modules if isinstance(t, str)}
    return types, names


def leaf_names(model: nn.Module, leaf_modules: LeafSpec) -> list[str]:
    """Qualified names of the modules of ``model`` selected by ``leaf_modules``."""
    types, names = _split_leaves(leaf_modules)
    return [
        name
        for name, m in model.named_modules()
        if name and (name in names or (types and isinstance(m, types)))
    ]


def trace_model(model: nn.Module, leaf_modules: LeafSpec = ()) -> fx.Graph:
    """Trace ``model`` symbolically (in its current mode), honouring ``leaf_modules``.

    Raises:
        UnsupportedOpError: If ``torch.fx`` cannot trace the model (data-dependent control
            flow); the message suggests making the offending submodule a leaf.
    """
    types, names = _split_leaves(leaf_modules)
    tracer = _Tracer(types, names)
    try:
        return tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        culprit = _untraceable_submodule(model, types, names)
        if culprit:
            cls = type(model.get_submodule(culprit)).__name__
            where = (
                f"The untraceable code is in submodule {culprit!r} ({cls}): make it a leaf "
                f"(leaf_modules=[{culprit!r}], or leaf_modules=[{cls}] for every instance; "
                "its parameters are then left unpermuted)"
            )
        else:
            where = (
                f"The untraceable code is in {type(model).__name__}.forward itself: make the "
                "offending part a submodule and a leaf (leaf_modules=[...])"
            )
        raise UnsupportedOpError(
            f"torch.fx cannot trace {type(model).__name__} (data-dependent control flow or "
            f"another untraceable construct): {exc}. {where}, or write the spec by hand "
            "(PermutationSpec.from_axes)."
        ) from exc


def _untraceable_submodule(
    model: nn.Module, types: tuple[type[nn.Module], ...], names: set[str]
) -> str | None:
    """The deepest submodule that fx cannot trace on its own (``None``: only the root)."""

    def fails(m: nn.Module) -> bool:
        try:
            _Tracer(types, names).trace(m)
        except Exception:
            return True
        return False

    culprit: str | None = None
    prefix = ""
    current = model
    while True:
        for name, child in current.named_children():
            qual = f"{prefix}{name}"
            tracer = _Tracer(types, names)
            if tracer.is_leaf_module(child, qual) or qual in names:
                continue
            if fails(child):
                culprit, prefix, current = qual, f"{qual}.", child
                break
        else:
            return culprit


def _as_tuple(example_input: Any) -> tuple[Any, ...]:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def _target_name(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    if node.op == "call_module":
        return str(t)
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod.startswith("torch") or mod == "" or name in dir(torch):
        return f"torch.{name}" if hasattr(torch, name) else name
    return f"{mod}.{name}"


def _fmt_arg(a: Any) -> str:
    if isinstance(a, fx.Node):
        return f"%{a.name}"
    if isinstance(a, (list, tuple)):
        inner = ", ".join(_fmt_arg(x) for x in a)
        return f"[{inner}]" if isinstance(a, list) else f"({inner})"
    return repr(a)


def describe_node(node: fx.Node) -> str:
    """Render a node like ``%cat_1 = torch.cat([%a, %b], dim=1)``."""
    args = [_fmt_arg(a) for a in node.args]
    args += [f"{k}={_fmt_arg(v)}" for k, v in node.kwargs.items()]
    text = f"%{node.name} = {_target_name(node)}({', '.join(args)})"
    return text if len(text) < 200 else text[:197] + "..."


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


class Walker:
    """Interprets traced graphs into permutation groups (union-find over group ids).

    Rules in :mod:`neuralign.perm._rules` call its methods; it is not public API.
    """

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

    # ------------------------------------------------------------------ rule API
    @property
    def node(self) -> fx.Node:
        assert self._node is not None
        return self._node

    def has_key(self, key: str) -> bool:
        """Whether ``key`` is a state-dict key of the model."""
        return key in self.state_keys

    def info(self, value: Any) -> Info:
        """Info of an argument (``None`` for non-tensors)."""
        assert self._rec is not None
        if isinstance(value, fx.Node):
            return self._rec.infos.get(value)
        return None

    def shape(self, value: Any) -> tuple[int, ...] | None:
        """Shape of a tensor-valued node (from shape propagation), else ``None``."""
        if isinstance(value, fx.Node):
            tm = value.meta.get("tensor_meta")
            if isinstance(tm, TensorMetadata):
                return tuple(int(s) for s in tm.shape)
        return None

    def set_kind(self, kind: str) -> None:
        """Override the current node's tap kind."""
        assert self._rec is not None
        self._rec.kinds[self.node] = kind

    def fixed_out(self) -> Info:
        """Info of a tensor unchanged by every permutation."""
        return FIXED

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

    def _gids_in(self, info: Info) -> list[int]:
        if isinstance(info, (Feat, Split, Heads)):
            return info.gids()
        if isinstance(info, (tuple, list)):
            return [g for x in info for g in self._gids_in(x)]
        return []

    def unsupported(self, reason: str) -> Info:
        """Report the current node as unsupported: its input groups are frozen and its output
        is treated as fixed. Discovery raises unless the caller froze those groups."""
        node = self.node
        gids = [g for a in node.all_input_nodes for g in self._gids_in(self.info(a))]
        stack = node.meta.get("nn_module_stack") or {}
        module = next(reversed(stack.values()))[0] if stack else None
        self.unsupported_ops.append(_Unsupported(describe_node(node), reason, gids, module))
        return FIXED

    def generic(self, call: Call) -> Info:
        """Fallback for ops without a row: fixed in, fixed out; otherwise unsupported."""
        node = call.node
        ins = [self.info(a) for a in node.all_input_nodes]
        if any(self._gids_in(i) for i in ins):
            return self.unsupported("the op is not in the table of neuralign.perm._rules")
        for i in ins:
            if isinstance(i, Param):
                self.pin(i.key)
        if call.module is not None:
            keys = list(call.module.state_dict())
            for k in keys:
                self.pin(f"{call.prefix}.{k}")
            if keys:
                self.opaque.setdefault(call.prefix, type(call.module).__name__)
        if self.shape(node) is None and not any(i is not None for i in ins):
            return None
        return FIXED

    # ------------------------------------------------------------------ walking
    def walk(self, graph: fx.Graph, mode: str) -> _GraphRecord:
        """Interpret every node of ``graph`` (traced in ``mode``)."""
        rec = _GraphRecord(mode, graph)
        self._rec = rec
        for node in graph.nodes:
            self._node = node
            module = self.modules.get(str(node.target)) if node.op == "call_module" else None
            kind = "other"
            if node.op == "placeholder":
                info: Info = FIXED
            elif node.op == "get_attr":
                key = str(node.target)
                info = Param(key if key in self.state_keys else None)
            elif node.op == "output":
                for a in node.all_input_nodes:
                    self.freeze(self._gids_in(rec.infos.get(a)), "it reaches a network output")
                kind = "output"
                info = None
            elif node.op == "call_module" and str(node.target) in self.leaf:
                for a in node.all_input_nodes:
                    self.freeze(self._gids_in(rec.infos.get(a)), f"input of leaf {node.target}")
                assert module is not None
                for k in module.state_dict():
                    self.pin(f"{node.target}.{k}")
                info = FIXED
            else:
                rule = lookup_rule(node, module)
                call = Call(node, module)
                heads = any(isinstance(self.info(a), (Split, Heads)) for a in node.all_input_nodes)
                if rule is None:
                    info = self.generic(call)
                elif heads and not rule.heads:
                    info = self.unsupported(
                        f"{rule.name} of a tensor split into attention heads is not supported"
                    )
                else:
                    kind = rule.kind
                    rec.kinds[node] = kind
                    info = rule.handler(self, call)
                    kind = rec.kinds[node]
            rec.infos[node] = info
            rec.kinds[node] = kind
        self._rec = None
        self._node = None
        return rec

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
                            dim=len(self.shape(node) or (0, 0)) - 1,
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


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, (tuple, list)):
        return type(x)(_to_meta(v) for v in x)
    return x


def _propagate_shapes(
    model: nn.Module, graph: fx.Graph, inputs: tuple[Any, ...], meta_model: nn.Module | None
) -> nn.Module | None:
    """Record every node's output shape (``node.meta["tensor_meta"]``).

    Runs on the ``meta`` device (no arithmetic at all) when every op supports it, else on the
    real (already copied) model. Returns the meta copy for reuse (``None`` if it failed).
    """
    try:
        if meta_model is None:
            meta_model = copy.deepcopy(model).to("meta")
        meta_model.train(model.training)
        with torch.no_grad():
            ShapeProp(fx.GraphModule(meta_model, graph)).propagate(*_to_meta(inputs))
        return meta_model
    except Exception as exc:  # an op without a meta kernel: fall back to real tensors
        log.debug("meta shape propagation failed (%s); using real tensors", exc)
    with torch.no_grad():
        ShapeProp(fx.GraphModule(model, graph)).propagate(*inputs)
    return None


def discover_spec(
    model: nn.Module,
    example_input: Any,
    *,
    leaf_modules: LeafSpec = (),
    freeze: Sequence[str] = (),
    verify: bool = True,
    modes: Sequence[str] = ("train", "eval"),
    atol: float = 1e-6,
    rtol: float = 1e-5,
) -> PermutationSpec:
    """Discover which hidden units of ``model`` can be permuted without changing its function.

    The model is traced with ``torch.fx`` in each of ``modes`` (train mode first, so that
    branches taken only in training, such as auxiliary classifier heads, are covered and
    ordered where they occur); shapes come from running ``example_input`` through a deep copy
    (the model itself is never run, mutated, or left in another mode). See
    :mod:`neuralign.perm._rules` for the op table.

    Args:
        model: Any ``torch.fx``-traceable module.
        example_input: A tensor (or tuple of tensors) the model accepts; use a batch of at
            least 2 so that train-mode BatchNorm works.
        leaf_modules: Module classes or qualified names to treat as opaque: their parameters
            are left unpermuted and the groups entering them are frozen.
        freeze: Names of groups to leave unpermuted; required to acknowledge the groups that
            meet an unsupported op (the error message lists them).
        verify: Check the result with :func:`neuralign.perm.verify.verify_spec`.
        modes: The modes to trace (and verify) in: ``"train"`` and/or ``"eval"``.
        atol: Absolute tolerance of the verification (float64).
        rtol: Relative tolerance of the verification.

    Returns:
        The spec: groups in forward order, each with its members and taps.

    Raises:
        UnsupportedOpError: An op the table cannot reason about meets a permuted tensor.
        SpecVerificationError: The verification failed (a bug: please report it).
        ConfigError: ``freeze`` names a group that does not exist, or a mode is unknown.
    """
    if not modes or any(m not in ("train", "eval") for m in modes):
        raise ConfigError(f"modes must be a non-empty subset of ('train', 'eval'), got {modes}")
    inputs = _as_tuple(example_input)
    work = copy.deepcopy(model)
    leaves = leaf_names(work, leaf_modules)
    walker = Walker(work, set(leaves))
    meta_work: nn.Module | None = None
    records = []
    for mode in modes:
        work.train(mode == "train")
        graph = trace_model(work, leaf_modules)
        meta_work = _propagate_shapes(work, graph, inputs, meta_work)
        records.append(walker.walk(graph, mode))
    spec = walker.build(records, freeze)
    spec.meta.update({"modes": list(modes), "leaf_modules": leaves})
    if verify:
        verify_spec(model, spec, example_input, modes=modes, atol=atol, rtol=rtol)
    cov = coverage(spec, model)
    if not spec.groups:
        log.warning("discovered no permutation groups in %s:\n%s", type(model).__name__, cov)
    else:
        log.info("permutation symmetry of %s:\n%s", type(model).__name__, cov)
    return spec
