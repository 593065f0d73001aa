"""The op table of permutation discovery: how each op passes, starts or merges channel groups.

Every tensor flowing through the traced graph carries an *info*:

* :class:`Feat` -- its channel axis is made of segments, each a run of units of one group
  (``gid``) or of fixed (never permuted) channels (``gid=None``); a unit may own ``inner``
  consecutive entries (after a flatten of ``C x H x W``).
* :data:`FIXED` -- the tensor's values do not change under any permutation of the spec (the
  network input, anything computed from fixed tensors only).
* :class:`Param` -- a parameter or buffer read with ``get_attr`` (functional layers).
* ``None`` -- not a tensor (sizes, shapes, Python scalars); a tuple of infos for tuples.

:data:`RULES` is the one table: one row per op kind, listing its module classes, functions and
tensor-method names, a handler computing the output info, and a *kind* used to place taps.
Adding support for an op is adding one row. Anything without a row is handled soundly: if no
input carries a permuted group its output is fixed; otherwise discovery reports it as
unsupported (:class:`neuralign.errors.UnsupportedOpError`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import fx, nn

if TYPE_CHECKING:
    from neuralign.perm.trace import Walker

__all__ = [
    "FIXED",
    "RULES",
    "Call",
    "Feat",
    "Heads",
    "Param",
    "Rule",
    "Seg",
    "Split",
    "lookup_rule",
]


@dataclass(frozen=True)
class Seg:
    """A run of ``size`` units of group ``gid`` (``None``: fixed channels) on a channel axis."""

    gid: int | None
    size: int
    inner: int = 1

    @property
    def width(self) -> int:
        """Number of indices the run occupies on the axis."""
        return self.size * self.inner


@dataclass(frozen=True)
class Feat:
    """A tensor whose channel axis ``axis`` is made of ``segs``."""

    axis: int
    segs: tuple[Seg, ...]

    @property
    def width(self) -> int:
        """Length of the channel axis."""
        return sum(s.width for s in self.segs)

    def gids(self) -> list[int]:
        """Group ids present (fixed segments excluded)."""
        return [s.gid for s in self.segs if s.gid is not None]

    def offsets(self) -> Iterator[tuple[int, Seg]]:
        """Yield ``(start, seg)`` for every segment."""
        start = 0
        for s in self.segs:
            yield start, s
            start += s.width


@dataclass(frozen=True)
class Split:
    """A tensor whose units are split into attention heads: axis ``head`` enumerates the
    blocks (heads) of group ``gids[p]`` and axis ``dim`` the units within a head. A fused
    q/k/v projection reshaped to ``(..., 3, heads, head_dim)`` has a ``part`` axis selecting
    among ``gids`` (one group per part)."""

    head: int
    dim: int
    gids_: tuple[int, ...]
    part: int | None = None

    def gids(self) -> list[int]:
        """Group ids present."""
        return list(self.gids_)

    def moved(self, where: Callable[[int], int]) -> Split:
        """The same layout with every axis mapped by ``where``."""
        part = None if self.part is None else where(self.part)
        return Split(where(self.head), where(self.dim), self.gids_, part)


@dataclass(frozen=True)
class Heads:
    """Attention scores or probabilities: axis ``axis`` enumerates the heads (blocks) of
    group ``gid``; no axis carries within-head units."""

    axis: int
    gid: int

    def gids(self) -> list[int]:
        """Group ids present."""
        return [self.gid]


class _Fixed:
    """Sentinel info: a tensor unchanged by every permutation of the spec."""

    def __repr__(self) -> str:
        return "FIXED"


FIXED = _Fixed()


@dataclass(frozen=True)
class Param:
    """A tensor read with ``get_attr``: ``key`` is its state-dict key (``None`` if it is not
    in the state dict, e.g. a non-persistent buffer or a traced constant).

    ``dims`` describes a *view* of the parameter made by reshape-like ops (``None``/``:``
    indexing, ``unsqueeze``, ``view`` adding size-1 axes, ``expand``): entry ``d`` is the
    parameter axis that dim ``d`` of the view shows, or ``None`` for an axis along which the
    view is constant (a new or expanded size-1 axis). ``dims=None``: the parameter itself.
    """

    key: str | None
    dims: tuple[int | None, ...] | None = None

    def axis_of(self, d: int) -> int | None:
        """Parameter axis shown by dim ``d`` of this view (``None``: constant along it)."""
        if self.dims is None:
            return d
        return self.dims[d] if 0 <= d < len(self.dims) else None


Info = Any  # Feat | Split | Heads | _Fixed | Param | tuple | None


@dataclass
class Call:
    """One node being interpreted by a rule.

    Attributes:
        node: The fx node.
        module: The called module for ``call_module`` nodes, else ``None``.
    """

    node: fx.Node
    module: nn.Module | None

    @property
    def prefix(self) -> str:
        """Qualified module name (``call_module``) used to build state-dict keys."""
        return str(self.node.target)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Return an argument given positionally (``index``) or by keyword (``name``)."""
        if name in self.node.kwargs:
            return self.node.kwargs[name]
        if index < len(self.node.args):
            return self.node.args[index]
        return default


Handler = Callable[["Walker", Call], Info]


@dataclass(frozen=True)
class Rule:
    """One row of the op table.

    Attributes:
        name: Short description (for docs and error messages).
        kind: Role for tap placement: ``"producer"`` (starts a group: conv, linear),
            ``"perchannel"`` (depthwise conv), ``"norm"``, ``"act"`` (elementwise),
            ``"merge"`` (elementwise op of several permuted tensors; set by the handler),
            ``"shape"`` (pooling, reshape, dropout, cat...), ``"meta"`` (sizes).
        handler: Computes the output info.
        modules: Module classes handled (``call_module``; subclasses match too).
        functions: Callables handled (``call_function``).
        methods: Tensor method names handled (``call_method``).
        heads: Whether the handler understands tensors split into attention heads
            (:class:`Split`, :class:`Heads`); other rules refuse them.
    """

    name: str
    kind: str
    handler: Handler
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[Callable[..., Any], ...] = ()
    methods: tuple[str, ...] = ()
    heads: bool = False


# ---------------------------------------------------------------------------- helpers
def _spatial_dims(obj: Any) -> int:
    """Number of trailing spatial dims of a 1d/2d/3d op, from its class or function name."""
    name = obj.__name__ if hasattr(obj, "__name__") else type(obj).__name__
    for k in (3, 2, 1):
        if f"{k}d" in name:
            return k
    return 0


def _first_tensor(w: Walker, call: Call) -> fx.Node:
    node = call.node.args[0] if call.node.args else next(iter(call.node.kwargs.values()))
    if not isinstance(node, fx.Node):
        raise TypeError(f"{call.node.name}: first argument is not a tensor")
    return node


def _param_key(w: Walker, call: Call, value: Any) -> tuple[bool, str | None]:
    """Resolve a functional layer's weight argument: ``(ok, key)``."""
    if value is None:
        return True, None
    info = w.info(value)
    if isinstance(info, Param):
        return True, info.key
    return False, None


def _module_key(w: Walker, call: Call, name: str) -> str | None:
    if call.module is None or getattr(call.module, name, None) is None:
        return None
    key = f"{call.prefix}.{name}"
    return key if w.has_key(key) else None


def _consume(
    w: Walker, x: Feat | Any, key: str | None, axis: int, *, allow_inner: bool = True
) -> str | None:
    """Make the channel segments of input ``x`` members of ``key``'s input axis.

    Returns an error string if the input cannot be consumed, else ``None``.
    """
    if not isinstance(x, Feat):
        if key is not None:
            w.pin(key, axis)
        return None
    if not allow_inner and any(s.inner != 1 for s in x.segs):
        return "its input is a flattened feature map"
    for start, seg in x.offsets():
        w.member(seg.gid, key, axis, start, seg.inner, seg.size)
    return None


# ---------------------------------------------------------------------------- handlers
def _conv(w: Walker, call: Call) -> Info:
    node = call.node
    transposed = False
    if call.module is not None:
        mod = call.module
        weight: str | None = _module_key(w, call, "weight")
        bias = _module_key(w, call, "bias")
        groups = int(getattr(mod, "groups", 1))
        transposed = bool(getattr(mod, "transposed", False))
        k = _spatial_dims(mod)
        in_ch, out_ch = int(getattr(mod, "in_channels", 0)), int(getattr(mod, "out_channels", 0))
        name = call.prefix
    else:
        fn = node.target
        transposed = "transpose" in getattr(fn, "__name__", "")
        k = _spatial_dims(fn)
        ok, weight = _param_key(w, call, call.arg(1, "weight"))
        ok2, bias = _param_key(w, call, call.arg(2, "bias"))
        if not (ok and ok2):
            return w.unsupported("its weight is computed, not a parameter")
        groups = int(call.arg(6, "groups", 1) or 1)  # same slot for conv and conv_transpose
        wshape = w.shape(call.arg(1, "weight"))
        if wshape is None:
            return w.unsupported("unknown weight shape")
        in_ch = wshape[0] if transposed else wshape[1] * groups
        out_ch = wshape[1] * groups if transposed else wshape[0]
        name = weight[: -len(".weight")] if weight and weight.endswith(".weight") else node.name
    x = w.info(_first_tensor(w, call))
    xshape = w.shape(_first_tensor(w, call))
    if isinstance(x, Feat) and xshape is not None and x.axis != len(xshape) - k - 1:
        return w.unsupported("its channel axis is not the one carrying the permuted units")
    in_axis, out_axis = (0, 1) if transposed else (1, 0)
    if groups != 1:
        if not transposed and groups == in_ch == out_ch:
            # Depthwise: unit c of the input only feeds output channel c.
            if isinstance(x, Feat):
                for start, seg in x.offsets():
                    w.member(seg.gid, weight, 0, start, seg.inner, seg.size)
                    w.member(seg.gid, bias, 0, start, seg.inner, seg.size)
                w.set_kind("perchannel")
                return x
            w.pin(weight)
            w.pin(bias)
            return w.fixed_out()
        return _grouped_conv(w, x, weight, bias, groups, in_ch, out_ch, transposed, name, k)
    err = _consume(w, x, weight, in_axis, allow_inner=False)
    if err:
        return w.unsupported(err)
    gid = w.producer(weight, out_ch, name)
    w.member(gid, weight, out_axis, 0, 1, out_ch)
    w.member(gid, bias, 0, 0, 1, out_ch)
    out_rank = len(w.shape(node) or (0, 0))
    return Feat(out_rank - k - 1, (Seg(gid, out_ch),))


def _grouped_conv(
    w: Walker,
    x: Info,
    weight: str | None,
    bias: str | None,
    groups: int,
    in_ch: int,
    out_ch: int,
    transposed: bool,
    name: str,
    k: int,
) -> Info:
    """A grouped convolution (``1 < groups``, not depthwise): output block ``j`` reads only
    input block ``j``. Its input and output groups become structured with ``groups`` blocks
    and linked (one block permutation moves input and output blocks together); within each
    block the input and output units permute independently. The weight's local input axis
    is a block-diagonal member (its column order depends on the row block)."""
    node = w.node
    why = f"grouped convolution %{node.name} (groups={groups}, in={in_ch}, out={out_ch})"
    if not isinstance(x, Feat):
        # Output block j reads fixed input block j: the blocks cannot move.
        w.pin(weight)
        w.pin(bias)
        return w.fixed_out()
    seg = x.segs[0]
    if len(x.segs) != 1 or seg.gid is None or seg.inner != 1:
        # A concatenation (several block permutations), fixed channels or a flattened map.
        w.freeze(x.gids(), f"its units enter {why} in several parts")
        w.pin(weight)
        w.pin(bias)
        return w.fixed_out()
    w.set_blocks(seg.gid, groups, why)
    gid = w.producer(weight, out_ch, name)
    w.set_blocks(gid, groups, why)
    w.link_blocks(seg.gid, gid)
    if transposed:  # weight (in, out / groups, ...)
        w.member(seg.gid, weight, 0, 0, 1, in_ch)
        w.block_member(gid, weight, 1, groups)
    else:  # weight (out, in / groups, ...)
        w.block_member(seg.gid, weight, 1, groups)
        w.member(gid, weight, 0, 0, 1, out_ch)
    w.member(gid, bias, 0, 0, 1, out_ch)
    out_rank = len(w.shape(node) or (0, 0))
    return Feat(out_rank - k - 1, (Seg(gid, out_ch),))


def _linear(w: Walker, call: Call) -> Info:
    node = call.node
    if call.module is not None:
        weight = _module_key(w, call, "weight")
        bias = _module_key(w, call, "bias")
        out_f = int(getattr(call.module, "out_features", 0))
        name = call.prefix
    else:
        ok, weight = _param_key(w, call, call.arg(1, "weight"))
        ok2, bias = _param_key(w, call, call.arg(2, "bias"))
        if not (ok and ok2):
            return w.unsupported("its weight is computed, not a parameter")
        wshape = w.shape(call.arg(1, "weight"))
        if wshape is None:
            return w.unsupported("unknown weight shape")
        out_f = wshape[0]
        name = weight[: -len(".weight")] if weight and weight.endswith(".weight") else node.name
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    xshape = w.shape(xnode) or ()
    if isinstance(x, Feat) and x.axis != len(xshape) - 1:
        return w.unsupported("it acts on an axis other than the permuted channel axis")
    _consume(w, x, weight, 1)
    gid = w.producer(weight, out_f, name)
    w.member(gid, weight, 0, 0, 1, out_f)
    w.member(gid, bias, 0, 0, 1, out_f)
    return Feat(len(w.shape(node) or (0, 0)) - 1, (Seg(gid, out_f),))


def _embedding(w: Walker, call: Call) -> Info:
    """``nn.Embedding``: a lookup table whose columns are the output units."""
    if call.module is not None:
        weight = _module_key(w, call, "weight")
        dim = int(getattr(call.module, "embedding_dim", 0))
        name = call.prefix
        idx = w.info(_first_tensor(w, call))
    else:
        ok, weight = _param_key(w, call, call.arg(1, "weight"))
        wshape = w.shape(call.arg(1, "weight"))
        if not ok or wshape is None:
            return w.unsupported("its weight is computed, not a parameter")
        dim = wshape[1]
        name = weight[: -len(".weight")] if weight and weight.endswith(".weight") else "embedding"
        idx = w.info(call.arg(0, "input"))
    if isinstance(idx, (Feat, Split, Heads)):
        return w.unsupported("its indices depend on permuted units")
    gid = w.producer(weight, dim, name)
    w.member(gid, weight, 1, 0, 1, dim)
    return Feat(len(w.shape(call.node) or (0, 0)) - 1, (Seg(gid, dim),))


def _norm_keys(w: Walker, call: Call) -> tuple[bool, list[str | None]]:
    if call.module is not None:
        names = ("weight", "bias", "running_mean", "running_var")
        return True, [_module_key(w, call, n) for n in names]
    # batch_norm / instance_norm(input, running_mean, running_var, weight, bias, ...)
    idx = ((3, "weight"), (4, "bias"), (1, "running_mean"), (2, "running_var"))
    keys: list[str | None] = []
    for i, n in idx:
        ok, key = _param_key(w, call, call.arg(i, n))
        if not ok:
            return False, []
        keys.append(key)
    return True, keys


def _channel_norm(w: Walker, call: Call) -> Info:
    """BatchNorm / InstanceNorm: per-channel statistics and affine parameters."""
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    ok, keys = _norm_keys(w, call)
    if not ok:
        return w.unsupported("its parameters are computed, not parameters")
    if not isinstance(x, Feat):
        for key in keys:
            w.pin(key)
        return w.fixed_out()
    if x.axis != 1 and len(w.shape(xnode) or ()) > 1:
        return w.unsupported("its channel axis (dim 1) is not the permuted axis")
    if any(s.inner != 1 for s in x.segs):
        return w.unsupported("its input is a flattened feature map")
    for key in keys:
        _consume(w, x, key, 0)
    return x


def _layer_norm(w: Walker, call: Call) -> Info:
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    if call.module is not None:
        nshape = tuple(getattr(call.module, "normalized_shape", ()))
        weight = _module_key(w, call, "weight")
        bias = _module_key(w, call, "bias")
    else:
        nshape = tuple(call.arg(1, "normalized_shape", ()))
        ok, weight = _param_key(w, call, call.arg(2, "weight"))
        ok2, bias = _param_key(w, call, call.arg(3, "bias"))
        if not (ok and ok2):
            return w.unsupported("its parameters are computed")
    if not isinstance(x, Feat):
        w.pin(weight)
        w.pin(bias)
        return w.fixed_out()
    rank = len(w.shape(xnode) or ())
    first = rank - len(nshape)
    if x.axis >= first:
        # Statistics over the channel axis are permutation-invariant; the affine
        # parameters follow the units.
        pax = x.axis - first
        _consume(w, x, weight, pax)
        _consume(w, x, bias, pax)
    return x


def _group_norm(w: Walker, call: Call) -> Info:
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    if call.module is not None:
        groups = int(getattr(call.module, "num_groups", 1))
        weight = _module_key(w, call, "weight")
        bias = _module_key(w, call, "bias")
    else:
        groups = int(call.arg(1, "num_groups", 1))
        ok, weight = _param_key(w, call, call.arg(2, "weight"))
        ok2, bias = _param_key(w, call, call.arg(3, "bias"))
        if not (ok and ok2):
            return w.unsupported("its parameters are computed")
    if not isinstance(x, Feat):
        w.pin(weight)
        w.pin(bias)
        return w.fixed_out()
    if x.axis != 1:
        return w.unsupported("its channel axis (dim 1) is not the permuted axis")
    if groups not in (1, x.width):
        # Statistics over fixed blocks of channels: a group's units may move block to block
        # (whole blocks) and within a block (Wu & He 2018, GroupNorm) -- a structured group.
        bs = x.width // groups
        for start, seg in x.offsets():
            if seg.gid is None:
                continue
            if seg.inner != 1 or start % bs or seg.size % bs:
                w.freeze(
                    [seg.gid],
                    f"its units straddle the {groups} channel groups of GroupNorm %{call.node.name}",
                )
                continue
            w.set_blocks(seg.gid, seg.size // bs, f"GroupNorm %{call.node.name}")
    _consume(w, x, weight, 0)
    _consume(w, x, bias, 0)
    return x


def _elementwise(w: Walker, call: Call) -> Info:
    """Elementwise ops (unary activations and broadcasting binary arithmetic).

    Operands that carry groups on the same output axis are tied (union of groups: this is what
    makes a residual stream one group); a parameter spanning the channel axis becomes a
    member; a fixed tensor spanning the channel axis freezes the groups it meets.
    """
    node = call.node
    out_shape = w.shape(node)
    if out_shape is None:
        return w.generic(call)
    rank = len(out_shape)
    operands = [a for a in node.all_input_nodes if w.shape(a) is not None]
    split = [a for a in operands if isinstance(w.info(a), (Split, Heads))]
    if split:
        return _elementwise_heads(w, split, operands, rank)
    feats: list[Feat] = []
    others: list[tuple[Any, tuple[int, ...], int]] = []  # (info, shape, rank shift)
    for a in operands:
        info = w.info(a)
        shape = w.shape(a) or ()
        shift = rank - len(shape)
        if isinstance(info, Feat):
            ax = info.axis + shift
            if out_shape[ax] != info.width:  # broadcast along its own channel axis
                w.freeze(info.gids(), f"broadcast in %{node.name}")
                continue
            feats.append(Feat(ax, info.segs))
        else:
            others.append((info, shape, shift))
    if not feats:
        for info, _, _ in others:
            if isinstance(info, Param):
                w.pin(info.key)
        return w.fixed_out()
    base = feats[0]
    for f in feats[1:]:
        same = f.axis == base.axis and [(s.size, s.inner) for s in f.segs] == [
            (s.size, s.inner) for s in base.segs
        ]
        if not same:
            w.freeze(base.gids() + f.gids(), f"operands of %{node.name} are laid out differently")
            continue
        for s, t in zip(base.segs, f.segs):
            if s.gid is None or t.gid is None:
                w.freeze([g for g in (s.gid, t.gid) if g is not None], f"fixed in %{node.name}")
            else:
                w.union(s.gid, t.gid)
    for info, shape, shift in others:
        d = base.axis - shift
        broadcast = d < 0 or shape[d] == 1
        if isinstance(info, Param) and info.key is not None:
            pa = None if broadcast else info.axis_of(d)
            if pa is None:
                w.pin(info.key)
            else:
                # A per-channel parameter (layer-scale gamma, a bias, a position embedding)
                # follows the units it meets.
                _consume(w, Feat(base.axis, base.segs), info.key, pa)
        elif not broadcast:
            w.freeze(base.gids(), f"a fixed tensor is combined with it in %{node.name}")
    w.set_kind("merge" if len(feats) > 1 else "act")
    return base


def _elementwise_heads(w: Walker, split: list[fx.Node], operands: list[fx.Node], rank: int) -> Info:
    """Scaling or masking attention scores / head-split activations: every other operand
    must be constant along the head (and head-unit) axes."""
    if len(split) > 1:
        return w.unsupported("an elementwise op of two tensors split into attention heads")
    x = w.info(split[0])
    shift = rank - len(w.shape(split[0]) or ())
    x = x.moved(lambda d: d + shift) if isinstance(x, Split) else Heads(x.axis + shift, x.gid)
    axes = {x.head, x.dim} if isinstance(x, Split) else {x.axis}
    if isinstance(x, Split) and x.part is not None:
        axes.add(x.part)
    for a in operands:
        if a is split[0]:
            continue
        shape = w.shape(a) or ()
        sh = rank - len(shape)
        if any(d - sh >= 0 and shape[d - sh] != 1 for d in axes):
            return w.unsupported("a tensor varying across attention heads is combined with it")
        info = w.info(a)
        if isinstance(info, Param):
            w.pin(info.key)
    w.set_kind("shape")
    return x


def _matmul(w: Walker, call: Call) -> Info:
    """``q @ k.transpose(-2, -1)`` (scores: q and k share their head units) and
    ``attn @ v`` (heads of the scores and of v move together)."""
    a_node, b_node = call.arg(0, "input"), call.arg(1, "other")
    a, b = w.info(a_node), w.info(b_node)
    sa, sb, so = w.shape(a_node), w.shape(b_node), w.shape(call.node)
    if not any(isinstance(i, (Feat, Split, Heads)) for i in (a, b)):
        for i in (a, b):
            if isinstance(i, Param):
                w.pin(i.key)
        return w.fixed_out()
    if sa is None or sb is None or so is None or len(sa) < 3 or len(sb) < 3:
        return w.unsupported("matmul of a permuted tensor (only attention products are known)")
    ra, rb, ro = len(sa), len(sb), len(so)

    def out_axis(d: int, r: int) -> int:
        return d + ro - r

    if (
        # q: (..., heads, T, d) @ kT: (..., heads, d, S): contracts the head units.
        isinstance(a, Split)
        and isinstance(b, Split)
        and a.part is None
        and b.part is None
        and a.dim == ra - 1
        and b.dim == rb - 2
        and out_axis(a.head, ra) == out_axis(b.head, rb) < ro - 2
    ):
        w.union(a.gids_[0], b.gids_[0])
        return Heads(out_axis(a.head, ra), a.gids_[0])
    if (
        # attn: (..., heads, T, S) @ v: (..., heads, S, d)
        isinstance(a, Heads)
        and isinstance(b, Split)
        and b.part is None
        and b.dim == rb - 1
        and out_axis(a.axis, ra) == out_axis(b.head, rb) < ro - 2
    ):
        w.link_blocks(a.gid, b.gids_[0])
        return Split(out_axis(b.head, rb), ro - 1, b.gids_)
    return w.unsupported("matmul of a permuted tensor (only attention products are known)")


def _sdpa(w: Walker, call: Call) -> Info:
    """``F.scaled_dot_product_attention(q, k, v)`` with q, k, v split into heads."""
    q, k, v = (w.info(call.arg(i, n)) for i, n in enumerate(("query", "key", "value")))
    mask = w.info(call.arg(3, "attn_mask"))
    if isinstance(mask, (Feat, Split, Heads)):
        return w.unsupported("its attention mask depends on permuted units")
    ok = all(isinstance(t, Split) and t.part is None for t in (q, k, v))
    shapes = [w.shape(call.arg(i, n)) for i, n in enumerate(("query", "key", "value"))]
    if not ok or any(s is None for s in shapes):
        return w.unsupported("scaled_dot_product_attention needs q, k, v split into heads")
    rank = len(shapes[0] or ())
    if any(t.dim != rank - 1 or t.head != rank - 3 for t in (q, k, v)):  # type: ignore[union-attr]
        return w.unsupported("q, k, v must be laid out (..., heads, tokens, head_dim)")
    w.union(q.gids_[0], k.gids_[0])  # type: ignore[union-attr]
    w.link_blocks(q.gids_[0], v.gids_[0])  # type: ignore[union-attr]
    return Split(rank - 3, rank - 1, v.gids_)  # type: ignore[union-attr]


def _pieces(w: Walker, call: Call) -> Info:
    """``chunk`` / ``split`` / ``unbind``: along a non-channel axis every piece keeps the
    layout; along the channel axis (a fused qkv projection cut in three) the pieces take
    the groups of their channels; ``unbind`` of a fused projection's part axis."""
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    shape = w.shape(xnode)
    if shape is None:
        return w.unsupported("unknown shapes") if isinstance(x, (Feat, Split, Heads)) else None
    rank = len(shape)
    target = call.node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    if name == "unbind":
        dim = int(call.arg(1, "dim", 0)) % rank
        sizes = [1] * shape[dim]
    else:
        dim = int(call.arg(2, "dim", 0)) % rank
        n = shape[dim]
        arg = call.arg(1, "chunks" if name == "chunk" else "split_size_or_sections")
        if name == "chunk":
            step = -(-n // int(arg))
            sizes = [min(step, n - i) for i in range(0, n, step)]
        elif isinstance(arg, int):
            sizes = [min(arg, n - i) for i in range(0, n, arg)]
        else:
            sizes = [int(v) for v in arg]

    def drop(d: int) -> int:
        return d - 1 if name == "unbind" and d > dim else d

    if isinstance(x, Param):
        w.pin(x.key)
        return tuple(FIXED for _ in sizes)
    if isinstance(x, Split):
        if dim == x.part and name == "unbind":
            return tuple(Split(drop(x.head), drop(x.dim), (g,)) for g in x.gids_)
        if dim in (x.head, x.dim, x.part):
            return w.unsupported("it cuts the attention-head axes")
        return tuple(x.moved(drop) for _ in sizes)
    if isinstance(x, Heads):
        if dim == x.axis:
            return w.unsupported("it cuts the attention-head axis")
        return tuple(Heads(drop(x.axis), x.gid) for _ in sizes)
    if not isinstance(x, Feat):
        return tuple(x for _ in sizes)
    if dim != x.axis:
        return tuple(Feat(drop(x.axis), x.segs) for _ in sizes)
    if name == "unbind" or any(s.inner != 1 for s in x.segs):
        return w.unsupported("it cuts the permuted channel axis into single channels")
    segs = list(x.segs)
    if len(segs) == 1 and segs[0].gid is not None and len(set(sizes)) == 1 and len(sizes) > 1:
        parts = w.split_group(segs[0].gid, len(sizes))
        if parts is not None:
            segs = [Seg(g, sizes[0]) for g in parts]
    out: list[Info] = []
    it = iter(segs)
    for size in sizes:
        piece: list[Seg] = []
        while sum(s.size for s in piece) < size:
            seg = next(it, None)
            if seg is None:
                break
            piece.append(seg)
        if sum(s.size for s in piece) != size:
            return w.unsupported("it cuts the channel axis inside a group of units")
        out.append(Feat(x.axis, tuple(piece)))
    return tuple(out)


def _mha(w: Walker, call: Call) -> Info:
    """``nn.MultiheadAttention``: the residual-stream group enters the packed input
    projection (q, k and v alike); the query/key units are one structured group (heads as
    blocks, within-head units shared by q and k), the value units another, linked to it
    (heads move together); the output projection starts a group (tied to the stream by the
    residual add). Averaged attention weights are invariant."""
    mod = call.module
    assert mod is not None
    p = call.prefix
    e, h = int(getattr(mod, "embed_dim")), int(getattr(mod, "num_heads"))  # noqa: B009
    q, k, v = (call.arg(i, n) for i, n in enumerate(("query", "key", "value")))
    infos = [w.info(t) for t in (q, k, v)]
    if not getattr(mod, "_qkv_same_embed_dim", True) or mod.bias_k is not None:
        return w.unsupported("MultiheadAttention with kdim/vdim or add_bias_kv")
    for t, info in zip((q, k, v), infos):
        shape = w.shape(t) or ()
        if isinstance(info, Feat) and info.axis != len(shape) - 1:
            return w.unsupported("its inputs carry units on an axis other than the last")
        if isinstance(info, (Split, Heads)):
            return w.unsupported("its inputs are split into heads")
    weight, bias = f"{p}.in_proj_weight", f"{p}.in_proj_bias"
    bias_key = bias if w.has_key(bias) else None
    for info in infos:
        _consume(w, info, weight, 1)
    qk = w.producer(f"{weight}#qk", e, f"{p}.qk")
    val = w.producer(f"{weight}#v", e, f"{p}.v")
    for start in (0, e):
        w.member(qk, weight, 0, start, 1, e)
        w.member(qk, bias_key, 0, start, 1, e)
    w.member(val, weight, 0, 2 * e, 1, e)
    w.member(val, bias_key, 0, 2 * e, 1, e)
    out_w = f"{p}.out_proj.weight"
    out_b = f"{p}.out_proj.bias"
    w.member(val, out_w, 1, 0, 1, e)
    w.proj_tap(qk, q, weight, 0, bias_key, e)
    w.proj_tap(qk, k, weight, e, bias_key, e)
    w.proj_tap(val, v, weight, 2 * e, bias_key, e)
    w.set_blocks(qk, h, f"the heads of {p}")
    w.set_blocks(val, h, f"the heads of {p}")
    w.link_blocks(qk, val)
    out = w.producer(out_w, e, f"{p}.out_proj")
    w.member(out, out_w, 0, 0, 1, e)
    w.member(out, out_b if w.has_key(out_b) else None, 0, 0, 1, e)
    rank = len(w.shape(q) or (0, 0, 0))
    average = call.arg(6, "average_attn_weights", True)
    weights: Info = FIXED
    if average is False and call.arg(4, "need_weights", True) is not False:
        w.freeze([qk, val], f"per-head attention weights of {p} are returned")
    return (Feat(rank - 1, (Seg(out, e),)), weights)


_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _rnn(w: Walker, call: Call) -> Info:
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: the hidden units of each layer and direction are
    a group, permuted alike in every gate block of ``weight_ih``, ``weight_hh`` (rows and
    columns) and both biases, and in the next layer's ``weight_ih`` columns."""
    mod = call.module
    assert mod is not None
    p = call.prefix
    gates = _GATES.get(str(getattr(mod, "mode", "")), 0)
    if not gates or int(getattr(mod, "proj_size", 0) or 0):
        return w.unsupported("recurrent layers with proj_size (or of an unknown kind)")
    if call.arg(1, "hx") is not None:
        return w.unsupported("an initial hidden state is passed in (only zeros are known)")
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    rank = len(w.shape(xnode) or (0, 0, 0))
    if isinstance(x, Feat) and (x.axis != rank - 1 or any(s.inner != 1 for s in x.segs)):
        return w.unsupported("its input carries units on an axis other than the features")
    hid, layers = int(getattr(mod, "hidden_size")), int(getattr(mod, "num_layers"))  # noqa: B009
    dirs = 2 if getattr(mod, "bidirectional", False) else 1
    prev: Info = x
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            sfx = f"l{layer}{'_reverse' if d else ''}"
            key = f"{p}.weight_hh_{sfx}"
            gid = w.producer(key if w.has_key(key) else None, hid, f"{p}.{sfx}")
            _consume(w, prev, f"{p}.weight_ih_{sfx}", 1)
            w.member(gid, f"{p}.weight_hh_{sfx}", 1, 0, 1, hid)
            for g in range(gates):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    k = f"{p}.{name}_{sfx}"
                    if w.has_key(k):
                        w.member(gid, k, 0, g * hid, 1, hid)
            outs.append(Seg(gid, hid))
        prev = Feat(rank - 1, tuple(outs))
    out = prev
    # h_n (and c_n): (layers * dirs, batch, hidden) stacks one group per slice
    final: Info
    if layers * dirs == 1:
        assert isinstance(out, Feat)
        final = Feat(len(w.shape(xnode) or (0, 0, 0)) - 1, out.segs)
    else:
        used = [
            u
            for u in call.node.users
            if u.target is operator.getitem and u.args[1] == 1 and len(u.users) > 0
        ]
        if used:
            return w.unsupported(
                "the final state h_n of a multi-layer or bidirectional RNN stacks several "
                "groups along one axis (read the output sequence instead)"
            )
        final = FIXED
    return (out, (final, final) if gates == 4 else final)


def _passthrough(w: Walker, call: Call) -> Info:
    """Ops that keep each channel separate (dropout, identity, dtype/device moves...)."""
    return w.info(_first_tensor(w, call))


def _pool(w: Walker, call: Call) -> Info:
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    target = call.module if call.module is not None else call.node.target
    k = _spatial_dims(target)
    rank = len(w.shape(xnode) or ())
    if isinstance(x, Feat):
        if x.axis >= rank - k or any(s.inner != 1 for s in x.segs):
            return w.unsupported("it pools over the permuted channel axis")
        out = w.shape(call.node)
        if out is None:  # (values, indices) tuple
            return w.unsupported("pooling that returns indices")
    return x


def _reduce(w: Walker, call: Call) -> Info:
    """mean/sum/amax/amin/... over some dims."""
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    if not isinstance(x, Feat):
        if isinstance(x, Param):
            w.pin(x.key)
        return w.fixed_out()
    rank = len(w.shape(xnode) or ())
    dim = call.arg(1, "dim", None)
    keepdim = bool(call.arg(2, "keepdim", False))
    if dim is None:
        return w.fixed_out()  # full reduction: invariant
    dims = {d % rank for d in ((dim,) if isinstance(dim, int) else tuple(dim))}
    if x.axis in dims:
        # Reducing over units is invariant to their order.
        w.set_kind("shape")
        return w.fixed_out()
    axis = x.axis if keepdim else x.axis - sum(1 for d in dims if d < x.axis)
    return Feat(axis, x.segs)


def _reshape(w: Walker, call: Call) -> Info:
    """view/reshape/flatten/squeeze/unsqueeze/unflatten, decided from the shapes.

    The channel axis may merge with the dims after it (flatten of ``C x H x W``: each unit
    now owns ``H * W`` consecutive entries) or split them off again; anything that splits or
    interleaves units (a channel shuffle) is unsupported.
    """
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    src = w.shape(xnode)
    dst = w.shape(call.node)
    if isinstance(x, Param):
        return _param_view(w, x, src, dst)
    if isinstance(x, (Split, Heads)):
        return _reshape_heads(w, x, src, dst)
    if not isinstance(x, Feat):
        return w.fixed_out() if x is FIXED else x
    if src is None or dst is None:
        return w.unsupported("unknown shapes")
    a = x.axis
    pre = math.prod(src[:a])
    for b in range(len(dst) + 1):
        if math.prod(dst[:b]) != pre:
            continue
        if b == len(dst):
            break
        # merge: dst[b] == prod(src[a:j])
        for j in range(a + 1, len(src) + 1):
            if math.prod(src[a:j]) == dst[b]:
                m = math.prod(src[a + 1 : j])
                return Feat(b, tuple(Seg(s.gid, s.size, s.inner * m) for s in x.segs))
        # split: src[a] == dst[b] * f, each unit's inner block divisible by f
        if dst[b] and src[a] % dst[b] == 0:
            f = src[a] // dst[b]
            if f > 1 and all(s.inner % f == 0 for s in x.segs):
                for k in range(b + 2, len(dst) + 1):
                    if math.prod(dst[b + 1 : k]) == f:
                        return Feat(b, tuple(Seg(s.gid, s.size, s.inner // f) for s in x.segs))
    heads = _split_heads(w, x, src, dst)
    if heads is not None:
        return heads
    return w.unsupported(
        f"reshaping {tuple(src)} -> {tuple(dst)} splits or interleaves the channel axis {a}"
    )


def _split_heads(w: Walker, x: Feat, src: tuple[int, ...], dst: tuple[int, ...]) -> Info:
    """``(..., E) -> (..., heads, head_dim)``: the units of one group split into heads (the
    group becomes structured: heads move as blocks); ``(..., 3E) -> (..., 3, heads, d)``:
    a fused q/k/v projection, whose group is split into one group per part first."""
    a = x.axis
    if len(x.segs) != 1 or x.segs[0].gid is None or x.segs[0].inner != 1:
        return None
    gid = x.segs[0].gid
    pre = math.prod(src[:a])
    rest = tuple(src[a + 1 :])
    for b in range(len(dst)):
        if math.prod(dst[:b]) != pre:
            continue
        for k in (2, 3):
            if b + k > len(dst) or math.prod(dst[b : b + k]) != src[a]:
                continue
            if tuple(dst[b + k :]) != rest or any(n == 1 for n in dst[b : b + k]):
                continue
            if k == 2:
                w.set_blocks(gid, dst[b], f"the head reshape %{w.node.name}")
                return Split(b, b + 1, (gid,))
            parts = w.split_group(gid, dst[b])
            if parts is None:
                return None
            for g in parts:
                w.set_blocks(g, dst[b + 1], f"the head reshape %{w.node.name}")
            return Split(b + 1, b + 2, tuple(parts), part=b)
    return None


def _reshape_heads(
    w: Walker, x: Split | Heads, src: tuple[int, ...] | None, dst: tuple[int, ...] | None
) -> Info:
    """Merging heads back, ``(..., heads, head_dim) -> (..., E)``; a no-op view."""
    if src is None or dst is None:
        return w.unsupported("unknown shapes")
    if tuple(src) == tuple(dst):
        return x
    if isinstance(x, Split) and x.part is None and x.dim == x.head + 1:
        h = x.head
        pre = math.prod(src[:h])
        n = src[h] * src[h + 1]
        for b in range(len(dst)):
            if math.prod(dst[:b]) == pre and dst[b] == n and tuple(dst[b + 1 :]) == src[h + 2 :]:
                return Feat(b, (Seg(x.gids_[0], n),))
    return w.unsupported(
        f"reshaping {tuple(src)} -> {tuple(dst)} interleaves units of different blocks (heads) "
        "of a split channel axis (a channel shuffle), or mixes them with other axes"
    )


def _param_view(
    w: Walker, p: Param, src: tuple[int, ...] | None, dst: tuple[int, ...] | None
) -> Info:
    """A reshape of a parameter that only adds or removes size-1 axes is a view of it (the
    parameter can still follow the units it meets); any other reshape pins it."""
    if src is None or dst is None:
        w.pin(p.key)
        return w.fixed_out()
    dims = p.dims if p.dims is not None else tuple(range(len(src)))
    kept = [(n, d) for n, d in zip(src, dims) if n != 1]
    if [n for n, _ in kept] != [n for n in dst if n != 1]:
        w.pin(p.key)
        return w.fixed_out()
    it = iter(d for _, d in kept)
    return Param(p.key, tuple(next(it) if n != 1 else None for n in dst))


def _index_map(items: tuple[Any, ...], rank: int) -> list[int | None] | None:
    """Source dim shown by each output dim of ``x[items]`` (``None``: a new axis), or ``None``
    if the index is advanced (tensors, lists). Integer indices drop their dim."""
    consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    out: list[int | None] = []
    src = 0
    for it in items:
        if it is None:
            out.append(None)
        elif it is Ellipsis:
            n = rank - consuming
            out.extend(range(src, src + n))
            src += n
        elif isinstance(it, slice):
            out.append(src)
            src += 1
        elif isinstance(it, int):
            src += 1
        else:
            return None
    out.extend(range(src, rank))
    return out


def _permute_dims(w: Walker, call: Call) -> Info:
    """``permute`` / ``transpose`` move the channel axis (channels-last LayerNorm blocks)."""
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    if not isinstance(x, (Feat, Param, Split, Heads)):
        return x
    shape = w.shape(xnode)
    if shape is None:
        if isinstance(x, Param):
            w.pin(x.key)
            return w.fixed_out()
        return w.unsupported("unknown shapes")
    rank = len(shape)
    target = call.node.target
    if target in ("transpose", torch.transpose, torch.swapaxes, "swapaxes"):
        d0 = int(call.arg(1, "dim0")) % rank
        d1 = int(call.arg(2, "dim1")) % rank
        order = list(range(rank))
        order[d0], order[d1] = d1, d0
    else:
        dims: Any = call.node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if not dims:
            dims = call.node.kwargs.get("dims") or ()
        order = [int(d) % rank for d in dims]
    if isinstance(x, Param):
        pdims = x.dims if x.dims is not None else tuple(range(rank))
        return Param(x.key, tuple(pdims[o] for o in order))
    if isinstance(x, Split):
        return x.moved(order.index)
    if isinstance(x, Heads):
        return Heads(order.index(x.axis), x.gid)
    return Feat(order.index(x.axis), x.segs)


def _cat(w: Walker, call: Call) -> Info:
    tensors = call.arg(0, "tensors")
    dim = int(call.arg(1, "dim", 0))
    if not isinstance(tensors, (list, tuple)):
        return w.unsupported("cat of a non-list")
    infos = [w.info(t) for t in tensors]
    shapes = [w.shape(t) for t in tensors]
    if any(s is None for s in shapes):
        return w.unsupported("unknown shapes")
    feats = [f for f in infos if isinstance(f, Feat)]
    if not feats:
        return w.fixed_out()
    rank = len(shapes[0] or ())
    dim %= rank
    axis = feats[0].axis
    if any(f.axis != axis for f in feats):
        return w.unsupported("its inputs carry units on different axes")
    if dim == axis:
        segs: list[Seg] = []
        for info, shape in zip(infos, shapes):
            if isinstance(info, Feat):
                segs.extend(info.segs)
            else:
                segs.append(Seg(None, (shape or ())[dim]))
        return Feat(axis, tuple(segs))
    # Concatenation along another axis (tokens): every input shares the channel layout. A
    # parameter (a CLS token, register tokens) is permuted with the units it joins.
    layout = [(s.size, s.inner) for s in feats[0].segs]
    for info in infos:
        if isinstance(info, Param) and info.key is not None:
            pa = info.axis_of(axis)
            if pa is not None and all(s.inner == 1 for s in feats[0].segs):
                _consume(w, Feat(axis, feats[0].segs), info.key, pa)
                continue
            w.freeze(
                [g for f in feats for g in f.gids()],
                f"a parameter not spanning the channel axis is concatenated in %{call.node.name}",
            )
            return feats[0]
        if not isinstance(info, Feat):
            w.freeze(
                [g for f in feats for g in f.gids()],
                f"a fixed tensor is concatenated with it in %{call.node.name}",
            )
            return feats[0]
        if [(s.size, s.inner) for s in info.segs] != layout:
            w.freeze([g for f in feats for g in f.gids()], f"inputs of %{call.node.name} differ")
            return feats[0]
    for info in feats[1:]:
        for s, t in zip(feats[0].segs, info.segs):
            if s.gid is None or t.gid is None:
                w.freeze([g for g in (s.gid, t.gid) if g is not None], "fixed in cat")
            else:
                w.union(s.gid, t.gid)
    return feats[0]


def _getitem(w: Walker, call: Call) -> Info:
    """Indexing. ``None``, ``:``, ``...`` and integer or slice indices of other dims are
    reshapes that carry the channel axis through (``s[:, :, None, None]`` of a squeeze-excite
    gate); selecting or slicing units and advanced (tensor) indexing are not."""
    src = call.node.args[0]
    idx = call.node.args[1]
    x = w.info(src)
    if isinstance(x, tuple):
        if isinstance(src, fx.Node) and src.op == "call_module" and isinstance(x[0], Feat):
            w.set_kind("producer")  # the output sequence of a recurrent layer: a tap
        return x[idx] if isinstance(idx, int) else w.generic(call)
    if x is None or x is FIXED:
        return x
    items = idx if isinstance(idx, tuple) else (idx,)
    shape = w.shape(src)
    if isinstance(x, Param):
        if shape is None:
            w.pin(x.key)
            return w.fixed_out()
        dims = x.dims if x.dims is not None else tuple(range(len(shape)))
        imap = _index_map(items, len(shape))
        ok = imap is not None and all(
            it == slice(None) or (isinstance(it, int) and shape[d] == 1)
            for d, it in _consumed(items, len(shape))
        )
        if not ok or imap is None:
            w.pin(x.key)
            return w.fixed_out()
        return Param(x.key, tuple(dims[d] if d is not None else None for d in imap))
    if isinstance(x, (Split, Heads)):
        return _getitem_heads(w, x, items, shape)
    if not isinstance(x, Feat):
        return w.generic(call)
    if shape is None:
        return w.unsupported("unknown shapes")
    imap = _index_map(items, len(shape))
    if imap is None:
        return w.unsupported("advanced indexing of a permuted tensor")
    for d, it in _consumed(items, len(shape)):
        if d == x.axis and it != slice(None):
            return w.unsupported("it selects or slices units of the permuted channel axis")
    return Feat(imap.index(x.axis), x.segs)


def _getitem_heads(
    w: Walker, x: Split | Heads, items: tuple[Any, ...], shape: tuple[int, ...] | None
) -> Info:
    """Indexing a head-split tensor: ``qkv[0]`` picks a part; other dims index freely."""
    if shape is None:
        return w.unsupported("unknown shapes")
    imap = _index_map(items, len(shape))
    if imap is None:
        return w.unsupported("advanced indexing of a tensor split into attention heads")
    keep = {x.head, x.dim} if isinstance(x, Split) else {x.axis}
    part = x.part if isinstance(x, Split) else None
    gids = x.gids_ if isinstance(x, Split) else ()
    for d, it in _consumed(items, len(shape)):
        if d in keep and it != slice(None):
            return w.unsupported("it selects or slices attention heads or head units")
        if d == part:
            if not isinstance(it, int):
                return w.unsupported("it slices the q/k/v parts of a fused projection")
            gids = (gids[it],)
            part = None
    if isinstance(x, Heads):
        return Heads(imap.index(x.axis), x.gid)
    return Split(
        imap.index(x.head), imap.index(x.dim), gids, None if part is None else imap.index(part)
    )


def _consumed(items: tuple[Any, ...], rank: int) -> list[tuple[int, Any]]:
    """``(source dim, index item)`` for every item that consumes a dim (not ``None``)."""
    consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    out: list[tuple[int, Any]] = []
    src = 0
    for it in items:
        if it is None:
            continue
        if it is Ellipsis:
            n = rank - consuming
            out.extend((d, slice(None)) for d in range(src, src + n))
            src += n
        else:
            out.append((src, it))
            src += 1
    return out


def _expand(w: Walker, call: Call) -> Info:
    """``expand`` / ``expand_as`` / ``broadcast_to``: size-1 axes repeated, leading axes added;
    the channel axis keeps its units (it cannot be a size-1 axis being expanded)."""
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    src = w.shape(xnode)
    dst = w.shape(call.node)
    if src is None or dst is None:
        if isinstance(x, Feat):
            return w.unsupported("unknown shapes")
        if isinstance(x, Param):
            w.pin(x.key)
        return w.fixed_out() if x is not None else None
    shift = len(dst) - len(src)
    if isinstance(x, Param):
        dims = x.dims if x.dims is not None else tuple(range(len(src)))
        new: list[int | None] = [None] * shift
        for d, n in enumerate(src):
            new.append(dims[d] if n == dst[d + shift] else None)
        return Param(x.key, tuple(new))
    if not isinstance(x, Feat):
        return x
    if dst[x.axis + shift] != x.width:
        return w.unsupported("it expands the permuted channel axis")
    return Feat(x.axis + shift, x.segs)


def _resample(w: Walker, call: Call) -> Info:
    """``F.interpolate`` / ``nn.Upsample`` / padding: each channel resampled or padded on its
    own along the spatial dims, so units pass through (refused if the channel axis is among
    the resampled or padded dims)."""
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    if not isinstance(x, Feat):
        return x
    rank = len(w.shape(xnode) or ())
    target = call.node.target if call.module is None else call.module
    touched: int
    name = getattr(target, "__name__", type(target).__name__)
    if name == "pad" or "Pad" in name:
        pad = call.arg(1, "pad") if call.module is None else getattr(call.module, "padding", ())
        pad = tuple(pad) if isinstance(pad, (tuple, list)) else (pad,) * (2 * _spatial_dims(target))
        nz = [i for i, p in enumerate(pad) if p != 0]
        touched = max(i // 2 for i in nz) + 1 if nz else 0
    else:
        touched = rank - 2
    if x.axis >= rank - touched or any(s.inner != 1 for s in x.segs):
        return w.unsupported("it resamples or pads along the permuted channel axis")
    return x


def _pixel_shuffle(w: Walker, call: Call) -> Info:
    """``pixel_unshuffle(r)``: input channel c becomes the r*r consecutive channels
    ``c*r*r + k`` (each unit owns r*r entries). ``pixel_shuffle(r)`` merges r*r consecutive
    channels into one: supported only when every unit already owns a multiple of r*r."""
    xnode = _first_tensor(w, call)
    x = w.info(xnode)
    if not isinstance(x, Feat):
        return x
    rank = len(w.shape(xnode) or ())
    if x.axis != rank - 3:
        return w.unsupported("its channel axis is not the permuted axis")
    if call.module is not None:
        r = int(
            getattr(call.module, "upscale_factor", 0) or getattr(call.module, "downscale_factor", 0)
        )
        unshuffle = isinstance(call.module, nn.PixelUnshuffle)
    else:
        unshuffle = "unshuffle" in getattr(call.node.target, "__name__", "")
        r = int(call.arg(1, "downscale_factor" if unshuffle else "upscale_factor"))
    f = r * r
    if unshuffle:
        return Feat(x.axis, tuple(Seg(s.gid, s.size, s.inner * f) for s in x.segs))
    if all(s.inner % f == 0 for s in x.segs):
        return Feat(x.axis, tuple(Seg(s.gid, s.size, s.inner // f) for s in x.segs))
    return w.unsupported(
        f"pixel_shuffle({r}) merges {f} consecutive channels of the permuted axis into one "
        "spatial block, so those channels cannot be permuted on their own"
    )


def _constant(w: Walker, call: Call) -> Info:
    """``zeros_like``, ``x.new_ones(...)``: values independent of the input's values."""
    return w.fixed_out()


def _meta(w: Walker, call: Call) -> Info:
    return None


def _getattr(w: Walker, call: Call) -> Info:
    """``x.shape``, ``x.dtype`` (not tensors); ``x.T``, ``result.values`` (tensors)."""
    if w.shape(call.node) is None:
        return None
    src = w.info(call.node.args[0])
    carried = (Feat, Split, Heads)
    if isinstance(src, carried) or (
        isinstance(src, tuple) and any(isinstance(s, carried) for s in src)
    ):
        return w.unsupported(f"attribute {call.node.args[1]!r} of a permuted tensor")
    return w.fixed_out()


def _softmax(w: Walker, call: Call) -> Info:
    # softmax over the channel axis is permutation-equivariant; over other axes, per channel.
    return w.info(_first_tensor(w, call))


_ACT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Mish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
)
_ACT_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    F.relu6,
    F.gelu,
    F.silu,
    torch.tanh,
    F.tanh,
    torch.sigmoid,
    F.sigmoid,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.mish,
    F.softplus,
    F.softsign,
    torch.exp,
    torch.log,
    torch.sqrt,
    torch.rsqrt,
    torch.abs,
    torch.neg,
    torch.square,
    torch.clamp,
    torch.clip,
    operator.neg,
    operator.pos,
    operator.abs,
    # binary arithmetic
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.itruediv,
    operator.pow,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
)
_ACT_METHODS = (
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "neg",
    "square",
    "clamp",
    "clamp_",
    "clip",
    "pow",
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "maximum",
    "minimum",
    "masked_fill",
)

#: The op table. One row per op kind; order does not matter except that the first row
#: whose module classes match (by ``isinstance``) wins.
RULES: tuple[Rule, ...] = (
    Rule(
        "convolution",
        "producer",
        _conv,
        modules=(
            nn.Conv1d,
            nn.Conv2d,
            nn.Conv3d,
            nn.ConvTranspose1d,
            nn.ConvTranspose2d,
            nn.ConvTranspose3d,
        ),
        functions=(
            F.conv1d,
            F.conv2d,
            F.conv3d,
            F.conv_transpose1d,
            F.conv_transpose2d,
            F.conv_transpose3d,
        ),
    ),
    Rule("linear", "producer", _linear, modules=(nn.Linear,), functions=(F.linear,)),
    Rule("embedding", "producer", _embedding, modules=(nn.Embedding,), functions=(F.embedding,)),
    Rule(
        "batch/instance norm",
        "norm",
        _channel_norm,
        modules=(nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm),
        functions=(F.batch_norm, F.instance_norm),
    ),
    Rule("layer norm", "norm", _layer_norm, modules=(nn.LayerNorm,), functions=(F.layer_norm,)),
    Rule("group norm", "norm", _group_norm, modules=(nn.GroupNorm,), functions=(F.group_norm,)),
    Rule(
        "elementwise",
        "act",
        _elementwise,
        modules=_ACT_MODULES,
        functions=_ACT_FUNCTIONS,
        methods=_ACT_METHODS,
        heads=True,
    ),
    Rule("multi-head attention", "producer", _mha, modules=(nn.MultiheadAttention,)),
    Rule("recurrent layer", "producer", _rnn, modules=(nn.LSTM, nn.GRU, nn.RNN)),
    Rule(
        "matmul (attention products)",
        "shape",
        _matmul,
        functions=(operator.matmul, torch.matmul, torch.bmm),
        methods=("matmul", "bmm"),
        heads=True,
    ),
    Rule(
        "scaled dot-product attention",
        "shape",
        _sdpa,
        functions=(F.scaled_dot_product_attention,),
        heads=True,
    ),
    Rule(
        "chunk / split / unbind",
        "shape",
        _pieces,
        functions=(torch.chunk, torch.split, torch.unbind),
        methods=("chunk", "split", "unbind"),
        heads=True,
    ),
    Rule(
        "pooling",
        "shape",
        _pool,
        modules=(
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
        ),
        functions=(
            F.max_pool1d,
            F.max_pool2d,
            F.max_pool3d,
            F.avg_pool1d,
            F.avg_pool2d,
            F.avg_pool3d,
            F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d,
            F.adaptive_avg_pool3d,
            F.adaptive_max_pool1d,
            F.adaptive_max_pool2d,
            F.adaptive_max_pool3d,
        ),
    ),
    Rule(
        "dropout / identity / dtype",
        "shape",
        _passthrough,
        modules=(
            nn.Dropout,
            nn.Dropout1d,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.AlphaDropout,
            nn.Identity,
        ),
        functions=(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout),
        methods=("contiguous", "clone", "detach", "float", "double", "half", "to", "type_as"),
        heads=True,
    ),
    Rule(
        "softmax",
        "shape",
        _softmax,
        modules=(nn.Softmax, nn.LogSoftmax),
        functions=(F.softmax, F.log_softmax, torch.softmax, torch.log_softmax),
        methods=("softmax", "log_softmax"),
        heads=True,
    ),
    Rule(
        "reduction",
        "shape",
        _reduce,
        functions=(torch.mean, torch.sum, torch.amax, torch.amin),
        methods=("mean", "sum", "amax", "amin"),
    ),
    Rule(
        "reshape",
        "shape",
        _reshape,
        modules=(nn.Flatten, nn.Unflatten),
        functions=(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten),
        methods=("view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten"),
        heads=True,
    ),
    Rule(
        "permute / transpose",
        "shape",
        _permute_dims,
        functions=(torch.permute, torch.transpose, torch.swapaxes),
        methods=("permute", "transpose", "swapaxes"),
        heads=True,
    ),
    Rule("cat", "shape", _cat, functions=(torch.cat, torch.concat, torch.concatenate)),
    Rule(
        "expand",
        "shape",
        _expand,
        functions=(torch.broadcast_to,),
        methods=("expand", "expand_as", "broadcast_to"),
    ),
    Rule(
        "resample / pad",
        "shape",
        _resample,
        modules=(
            nn.Upsample,
            nn.ZeroPad1d,
            nn.ZeroPad2d,
            nn.ZeroPad3d,
            nn.ConstantPad1d,
            nn.ConstantPad2d,
            nn.ConstantPad3d,
            nn.ReflectionPad1d,
            nn.ReflectionPad2d,
            nn.ReflectionPad3d,
            nn.ReplicationPad1d,
            nn.ReplicationPad2d,
            nn.ReplicationPad3d,
        ),
        functions=(
            F.interpolate,
            F.upsample,
            F.upsample_nearest,
            F.upsample_bilinear,
            F.pad,
        ),
    ),
    Rule(
        "pixel (un)shuffle",
        "shape",
        _pixel_shuffle,
        modules=(nn.PixelShuffle, nn.PixelUnshuffle),
        functions=(F.pixel_shuffle, F.pixel_unshuffle, torch.pixel_shuffle, torch.pixel_unshuffle),
    ),
    Rule("getitem", "shape", _getitem, functions=(operator.getitem,), heads=True),
    Rule(
        "constant of a tensor's shape",
        "meta",
        _constant,
        functions=(torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like),
        methods=("new_zeros", "new_ones", "new_full", "new_empty"),
    ),
    Rule("attribute", "meta", _getattr, functions=(getattr,), heads=True),
    Rule("size / dim", "meta", _meta, methods=("size", "dim", "numel"), heads=True),
)

_BY_FUNCTION: dict[Any, Rule] = {f: r for r in RULES for f in r.functions}
_BY_METHOD: dict[str, Rule] = {m: r for r in RULES for m in r.methods}


def lookup_rule(node: fx.Node, module: nn.Module | None) -> Rule | None:
    """Return the row of :data:`RULES` for ``node`` (``None`` if the op is not in the table)."""
    if node.op == "call_module":
        for rule in RULES:
            if rule.modules and isinstance(module, rule.modules):
                return rule
        return None
    if node.op == "call_function":
        try:
            return _BY_FUNCTION.get(node.target)
        except TypeError:  # unhashable target
            return None
    if node.op == "call_method":
        return _BY_METHOD.get(str(node.target))
    return None


def describe_rules() -> Sequence[str]:
    """One line per row of the table (for documentation)."""
    return [f"{r.name} ({r.kind})" for r in RULES]
