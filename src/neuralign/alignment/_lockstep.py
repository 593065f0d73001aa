"""Run two networks of one architecture node by node, in lock-step, on the same input.

Alignment needs, at every tap, the activations of model A *and* model B for the same
images. Capturing every tap of both models first would hold all tapped activations of both
at once (several times the memory of a plain forward pass). Instead both models' traced
graphs are walked together: after each node the tapped values are handed to a callback and
every value past its last use is freed, so at any moment only the live tensors of the
current layer of each model exist. No hooks are installed on the models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from neuralign.perm.spec import PermutationSpec
from neuralign.perm.trace import trace_model

TapCallback = Callable[[str, torch.Tensor, torch.Tensor], None]


class LockstepRunner:
    """Walk the graphs of ``model_a`` and ``model_b`` together, every layer in eval mode.

    The graph is traced with the model in *train* mode when the spec has train-mode taps, so
    branches that exist only in training (GoogLeNet's auxiliary heads) are part of it; it is
    then executed with every module in eval mode (BatchNorm running statistics, no dropout),
    so all groups, auxiliary ones included, are matched on deterministic activations.

    Args:
        model_a: first network (put in eval mode by the caller).
        model_b: second network of the same architecture.
        spec: the permutation spec whose taps name the nodes to report.
        pre_activation: report each tap's pre-activation node instead.
    """

    def __init__(
        self, model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec, pre_activation: bool
    ) -> None:
        leaves = spec.meta.get("leaf_modules", ())
        all_taps = [t for grp in spec.groups.values() for t in grp.taps]
        self.mode = "train" if any(t.mode == "train" for t in all_taps) else "eval"
        flags = [(m, m.training) for m in model_a.modules()]
        model_a.train(self.mode == "train")
        try:
            graph = trace_model(model_a, leaves)
        finally:
            for m, flag in flags:
                m.training = flag
        self.graph = graph
        self.gm_a = fx.GraphModule(model_a, graph)
        self.gm_b = fx.GraphModule(model_b, graph)
        self.tapped: set[str] = set()
        for grp in spec.groups.values():
            for tap in grp.taps:
                if tap.mode == self.mode:
                    self.tapped.add((tap.pre_node or tap.node) if pre_activation else tap.node)
        names = {n.name for n in graph.nodes}
        missing = self.tapped - names
        if missing:
            from neuralign.perm.spec import SpecError

            raise SpecError(
                f"the spec's taps {sorted(missing)} are not nodes of the model's graph: was the "
                "spec discovered on another architecture?"
            )
        self.interp_a = fx.Interpreter(self.gm_a, garbage_collect_values=True)
        self.interp_b = fx.Interpreter(self.gm_b, garbage_collect_values=True)

    @torch.no_grad()
    def run(self, x: torch.Tensor, callback: TapCallback) -> None:
        """Run both models on ``x``; call ``callback(node, value_a, value_b)`` at each tap."""
        env_a: dict[fx.Node, Any] = {}
        env_b: dict[fx.Node, Any] = {}
        ia, ib = self.interp_a, self.interp_b
        last_uses = ia.user_to_last_uses
        for node in self.graph.nodes:
            if node.op == "placeholder":
                env_a[node] = x
                env_b[node] = x
                continue
            if node.op == "output":
                break
            ia.env = env_a
            env_a[node] = ia.run_node(node)
            ib.env = env_b
            env_b[node] = ib.run_node(node)
            if node.name in self.tapped:
                callback(node.name, env_a[node], env_b[node])
            for dead in last_uses.get(node, ()):
                env_a.pop(dead, None)
                env_b.pop(dead, None)
        env_a.clear()
        env_b.clear()
