"""Op-rule handlers for parameterised layers: convolution, linear, embedding and norms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralign.perm.rules.common import (
    _consume,
    _first_tensor,
    _module_key,
    _param_key,
    _spatial_dims,
)
from neuralign.perm.rules.types import Call, Feat, Heads, Info, Seg, Split

if TYPE_CHECKING:
    from neuralign.perm.walker import Walker


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


# batch_norm / instance_norm(input, running_mean, running_var, weight, bias, ...)
_BN_ARGS = ((3, "weight"), (4, "bias"), (1, "running_mean"), (2, "running_var"))
# layer_norm(input, normalized_shape, weight, bias) / group_norm(input, num_groups, weight, bias)
_AFFINE_ARGS = ((2, "weight"), (3, "bias"))


def _norm_keys(
    w: Walker, call: Call, idx: tuple[tuple[int, str], ...] = _BN_ARGS
) -> tuple[bool, list[str | None]]:
    """State-dict keys of a norm's tensors (module attributes, or the functional form's
    arguments ``idx``); ``ok`` is false if an argument is computed, not a parameter."""
    if call.module is not None:
        return True, [_module_key(w, call, n) for _, n in idx]
    keys: list[str | None] = []
    for i, n in idx:
        ok, key = _param_key(w, call, call.arg(i, n))
        if not ok:
            return False, [None] * len(idx)
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
    else:
        nshape = tuple(call.arg(1, "normalized_shape", ()))
    ok, (weight, bias) = _norm_keys(w, call, _AFFINE_ARGS)
    if not ok:
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
    else:
        groups = int(call.arg(1, "num_groups", 1))
    ok, (weight, bias) = _norm_keys(w, call, _AFFINE_ARGS)
    if not ok:
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
