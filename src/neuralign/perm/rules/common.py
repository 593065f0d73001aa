"""Small helpers shared by the op-rule handlers of :mod:`neuralign.perm._rules`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import fx

from neuralign.perm.rules.types import Call, Feat, Param

if TYPE_CHECKING:
    from neuralign.perm.walker import Walker


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
