"""Op-rule handlers for shape ops: reshape, permute/transpose, cat, getitem, expand,
resample/pad and pixel (un)shuffle."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from neuralign.perm.rules.common import _consume, _first_tensor, _spatial_dims
from neuralign.perm.rules.types import FIXED, Call, Feat, Heads, Info, Param, Seg, Split

if TYPE_CHECKING:
    from neuralign.perm.walker import Walker


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
