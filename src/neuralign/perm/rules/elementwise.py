"""Op-rule handlers that keep channels apart: elementwise ops (activations, arithmetic,
merges of several permuted tensors), dropout/identity, pooling, reductions, softmax and
shape-only ops (constants, sizes, attributes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import fx

from neuralign.perm.rules.common import _consume, _first_tensor, _spatial_dims
from neuralign.perm.rules.types import Call, Feat, Heads, Info, Param, Split

if TYPE_CHECKING:
    from neuralign.perm.walker import Walker


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
