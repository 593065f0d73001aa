"""Capture unit activations at the taps of a permutation spec.

The model is re-traced with ``torch.fx`` (same leaf modules as at discovery) and the graph is
cut down to the tapped nodes; it is run by an ``fx.Interpreter`` on the *same* module object,
so it always sees the model's current parameters and buffers (also after ``.to(device)`` or
``load_state_dict``). No hooks are installed, so none can be left behind.

Example:
    >>> tap = ActivationTap(model, spec)          # once
    >>> for x, _ in loader:                        # per batch
    ...     acts = tap(x)                          # {group: [(N, n, *spatial), ...]}
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn

from neuralign.perm._rules import lookup_rule
from neuralign.perm.spec import Group, PermutationSpec, SpecError, Tap
from neuralign.perm.trace import _propagate_shapes, trace_model

__all__ = ["ActivationTap", "capture_activations", "derive_taps"]


def _mode_setter(model: nn.Module, train: bool) -> Callable[[], None]:
    """Put ``model`` in ``train`` mode and return a function restoring every module's flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)

    def restore() -> None:
        for m, flag in flags:
            m.training = flag

    return restore


@dataclass
class _Program:
    graph: fx.Graph
    # (group, output slot, start, size, dim) per tap, in spec order
    slices: list[tuple[str, int, int, int, int]]
    taps: list[Tap]
    proj: bool


class ActivationTap:
    """Reusable activation capture for a model and its spec: build once, call per batch.

    Which taps are read depends on the model's mode at call time (``spec`` taps carry the
    mode they were traced in): in eval mode GoogLeNet's auxiliary-head groups have no taps
    and are absent from the result.

    Args:
        model: The network the spec was discovered on (or one of the same architecture).
        spec: A discovered spec (hand-written specs have no taps).
        groups: Restrict to these groups (default: all groups with taps).
        pre_activation: Read the input of each tap's last activation (e.g. the BatchNorm
            output) instead of its output.
        grad: Keep the autograd graph (default: run under ``torch.no_grad``).

    Raises:
        SpecError: If ``groups`` names unknown groups.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: PermutationSpec,
        *,
        groups: Sequence[str] | None = None,
        pre_activation: bool = False,
        grad: bool = False,
    ) -> None:
        unknown = [g for g in groups or () if g not in spec.groups]
        if unknown:
            raise SpecError(f"unknown groups {unknown}; the spec has {list(spec.groups)}")
        self.model = model
        self.spec = spec
        self.groups = list(groups) if groups is not None else list(spec.groups)
        self.pre_activation = pre_activation
        self.grad = grad
        self._programs: dict[str, _Program] = {}

    def _program(self, mode: str) -> _Program:
        if mode in self._programs:
            return self._programs[mode]
        wanted: list[str] = []
        slices: list[tuple[str, int, int, int, int]] = []
        taps: list[Tap] = []
        for name in self.groups:
            for tap in self.spec.groups[name].taps:
                if tap.mode != mode:
                    continue
                node = (tap.pre_node or tap.node) if self.pre_activation else tap.node
                if node not in wanted:
                    wanted.append(node)
                slices.append((name, wanted.index(node), tap.start, tap.size, tap.dim))
                taps.append(tap)
        restore = _mode_setter(self.model, mode == "train")
        try:
            graph = trace_model(self.model, self.spec.meta.get("leaf_modules", ()))
        finally:
            restore()
        nodes = {n.name: n for n in graph.nodes}
        missing = [n for n in wanted if n not in nodes]
        if missing:
            raise SpecError(
                f"the spec's taps {missing} are not nodes of the model's graph: was the spec "
                "discovered on another architecture?"
            )
        for n in list(graph.nodes):
            if n.op == "output":
                graph.erase_node(n)
        graph.output(tuple(nodes[n] for n in wanted))
        # Drop everything the taps do not need (the head, later blocks).
        for n in reversed(list(graph.nodes)):
            if n.op not in ("placeholder", "output") and not n.users:
                graph.erase_node(n)
        graph.lint()
        prog = _Program(graph, slices, taps, any(t.proj is not None for t in taps))
        self._programs[mode] = prog
        return prog

    def __call__(self, *inputs: Any) -> dict[str, list[torch.Tensor]]:
        """Run the model on ``inputs``; return per group the tapped tensors ``(N, n, ...)``
        (units moved to dim 1: a token tensor ``(N, T, n)`` is returned as ``(N, n, T)``).

        Groups without a tap in the model's current mode are absent.
        """
        prog = self._program("train" if self.model.training else "eval")
        with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
            outs = fx.Interpreter(self.model, graph=prog.graph).run(*inputs)
        result: dict[str, list[torch.Tensor]] = {}
        state = self.model.state_dict() if prog.proj else {}
        for (name, slot, start, size, dim), tap in zip(prog.slices, prog.taps):
            if tap.proj is not None:
                value = tap.read(outs[slot], state)
                result.setdefault(name, []).append(value.movedim(-1, 1))
            else:
                value = outs[slot].narrow(dim, start, size)
                result.setdefault(name, []).append(value.movedim(dim, 1) if dim != 1 else value)
        return result


def capture_activations(
    model: nn.Module,
    spec: PermutationSpec,
    x: Any,
    *,
    groups: Sequence[str] | None = None,
    pre_activation: bool = False,
) -> dict[str, list[torch.Tensor]]:
    """One-shot :class:`ActivationTap`: activations of ``model`` on ``x`` at ``spec``'s taps.

    Args:
        model: The network.
        spec: Its discovered spec.
        x: Input tensor (or tuple of tensors).
        groups: Restrict to these groups.
        pre_activation: Tap the input of the last activation instead of its output.

    Returns:
        ``{group: [tensor (N, size, *spatial) per tap]}``.
    """
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    return ActivationTap(model, spec, groups=groups, pre_activation=pre_activation)(*inputs)


def _producer_node(graph: fx.Graph, modules: dict[str, nn.Module], grp: Group) -> fx.Node | None:
    """The ``call_module`` node of the layer whose output units are the group's (a member
    ``<layer>.weight`` on the layer's output axis, covering the whole output)."""
    for m in grp.members:
        if not m.key.endswith(".weight") or m.start != 0 or m.inner != 1:
            continue
        prefix = m.key[: -len(".weight")]
        mod = modules.get(prefix)
        if isinstance(mod, nn.Linear):
            ok = m.axis == 0 and mod.out_features == grp.size
        elif isinstance(mod, nn.modules.conv._ConvNd):
            out_axis = 1 if mod.transposed else 0
            # grouped convolutions too: their output channels are the group's units
            ok = m.axis == out_axis and mod.out_channels == grp.size
        else:
            ok = False
        if not ok:
            continue
        for node in graph.nodes:
            if node.op == "call_module" and str(node.target) == prefix:
                return node
    return None


def derive_taps(model: nn.Module, spec: PermutationSpec, example_input: Any) -> PermutationSpec:
    """Give the groups of ``spec`` that have no taps (a hand-written spec) taps at their
    producer layers: the output of the Linear/Conv whose output axis is a member, followed
    through the norm and activation layers that directly continue it (a conv-BN-ReLU chain is
    tapped after the ReLU, as discovery does).

    Returns:
        A new spec (same groups and members); groups whose producer cannot be found keep
        no taps.
    """
    leaves = spec.meta.get("leaf_modules", ())
    work = copy.deepcopy(model).eval()
    graph = trace_model(work, leaves)
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    _propagate_shapes(work, graph, inputs, None)
    modules = dict(work.named_modules())
    groups = {}
    for name, grp in spec.groups.items():
        if grp.taps:
            groups[name] = grp
            continue
        node = _producer_node(graph, modules, grp)
        if node is None:
            groups[name] = grp
            continue
        linear = isinstance(modules.get(str(node.target)), nn.Linear)
        pre: fx.Node | None = None
        while len(node.users) == 1:
            user = next(iter(node.users))
            mod = modules.get(str(user.target)) if user.op == "call_module" else None
            rule = lookup_rule(user, mod)
            if rule is None or rule.kind not in ("norm", "act"):
                break
            if len(user.all_input_nodes) != 1 or user.all_input_nodes[0] is not node:
                break
            if rule.kind == "act":
                pre = node
            node = user
        pre = pre or node
        tm = node.meta.get("tensor_meta")
        rank = len(tm.shape) if tm is not None else 2
        dim = rank - 1 if linear else 1
        tap = Tap(
            node=node.name,
            module=str(node.target) if node.op == "call_module" else None,
            start=0,
            size=grp.size,
            pre_node=pre.name,
            pre_module=str(pre.target) if pre.op == "call_module" else None,
            dim=dim if rank > 1 else 0,
            mode="eval",
        )
        groups[name] = replace(grp, taps=(tap,))
    return PermutationSpec(groups, dict(spec.meta))
