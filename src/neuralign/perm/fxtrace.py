"""Tracing a model with ``torch.fx`` (with opaque leaf modules), node descriptions and
shape propagation, for :func:`neuralign.perm.trace.discover_spec`."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from neuralign.errors import UnsupportedOpError

log = logging.getLogger("neuralign.perm.trace")  # one logger for discovery


#: Module classes or qualified module names to treat as opaque leaves.
LeafSpec = Sequence[type[nn.Module] | str]


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


def node_shape(value: Any) -> tuple[int, ...] | None:
    """Shape of a tensor-valued node (from shape propagation), else ``None``."""
    if isinstance(value, fx.Node):
        tm = value.meta.get("tensor_meta")
        if isinstance(tm, TensorMetadata):
            return tuple(int(s) for s in tm.shape)
    return None


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
