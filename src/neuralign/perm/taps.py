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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from neuralign.perm.spec import PermutationSpec, SpecError
from neuralign.perm.trace import trace_model

__all__ = ["ActivationTap", "capture_activations"]


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
        for name in self.groups:
            for tap in self.spec.groups[name].taps:
                if tap.mode != mode:
                    continue
                node = (tap.pre_node or tap.node) if self.pre_activation else tap.node
                if node not in wanted:
                    wanted.append(node)
                slices.append((name, wanted.index(node), tap.start, tap.size, tap.dim))
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
        prog = _Program(graph, slices)
        self._programs[mode] = prog
        return prog

    def __call__(self, *inputs: Any) -> dict[str, list[torch.Tensor]]:
        """Run the model on ``inputs``; return per group the tapped tensors ``(N, n, ...)``.

        Groups without a tap in the model's current mode are absent.
        """
        prog = self._program("train" if self.model.training else "eval")
        with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
            outs = fx.Interpreter(self.model, graph=prog.graph).run(*inputs)
        result: dict[str, list[torch.Tensor]] = {}
        for name, slot, start, size, dim in prog.slices:
            result.setdefault(name, []).append(outs[slot].narrow(dim, start, size))
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
