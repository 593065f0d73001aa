"""Op-rule handlers for attention: matmul, scaled dot-product attention, chunk/split/unbind
of projections into heads, and ``nn.MultiheadAttention``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralign.perm.rules.common import _consume, _first_tensor
from neuralign.perm.rules.types import FIXED, Call, Feat, Heads, Info, Param, Seg, Split

if TYPE_CHECKING:
    from neuralign.perm.walker import Walker


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
