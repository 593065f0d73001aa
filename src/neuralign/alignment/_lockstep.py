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
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from neuralign.alignment.correlation_stats import scratch_buffers
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
        fold: fold eval-mode BatchNorm into the convolution before it (see ``_prepare``).
    """

    def __init__(
        self,
        model_a: nn.Module,
        model_b: nn.Module,
        spec: PermutationSpec,
        pre_activation: bool,
        fold: bool = True,
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
        # scratch buffers of the correlation updates, reused across batches (freed with us)
        self.workspace: dict[tuple[object, ...], torch.Tensor] = {}
        self.fold = fold
        self.folded = 0
        self.report_as: dict[str, str] = {}
        self._prepared = False
        self._models = (model_a, model_b)

    def _prepare(self) -> None:
        """Fold eval-mode BatchNorm into the convolutions before it; build the interpreters.

        Inference-time folding (Ioffe & Szegedy 2015, Sec. 3.1: in eval mode BatchNorm is a
        fixed per-channel affine map) of a ``Conv → BatchNorm`` pair whose convolution output
        feeds only that BatchNorm and is not tapped: the convolution's weights and bias absorb
        the affine map, so the pass does one layer's work instead of two. Tapped values change
        only by float rounding. A tapped BatchNorm output (a pre-activation tap) is reported
        under its own name from the fused node. Skipped when a model is in train mode.
        """
        self._prepared = True
        if self.fold and not any(m.training for mdl in self._models for m in mdl.modules()):
            self._fold_conv_bn()
        self._relu_in_place()
        self.interp_a = fx.Interpreter(self.gm_a, garbage_collect_values=True)
        self.interp_b = fx.Interpreter(self.gm_b, garbage_collect_values=True)

    def _fold_conv_bn(self) -> None:
        convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        for node in list(self.graph.nodes):
            if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
                continue
            prev = node.args[0]
            if not isinstance(prev, fx.Node) or prev.op != "call_module":
                continue
            if len(prev.users) != 1 or prev.name in self.tapped:
                continue
            pairs = []
            for gm in (self.gm_a, self.gm_b):
                conv, bn = gm.get_submodule(str(prev.target)), gm.get_submodule(str(node.target))
                ok = (
                    type(conv) in convs
                    and type(bn) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
                    and bn.track_running_stats
                    and bn.running_mean is not None
                    and conv.padding_mode == "zeros"
                )
                pairs.append((conv, bn) if ok else None)
            if any(p is None for p in pairs):
                continue
            name = f"_neuralign_fused_{self.folded}"
            for gm, pair in zip((self.gm_a, self.gm_b), pairs, strict=True):
                assert pair is not None
                fused = fuse_conv_bn_eval(pair[0], pair[1])  # type: ignore[type-var, arg-type]
                fused.requires_grad_(False)
                gm.add_submodule(name, fused)
            prev.target = name
            node.replace_all_uses_with(prev)
            if node.name in self.tapped:
                self.tapped.discard(node.name)
                self.tapped.add(prev.name)
                self.report_as[prev.name] = node.name
            self.graph.erase_node(node)
            self.folded += 1

    def _relu_in_place(self) -> None:
        """Apply ReLU in place where its input is an intermediate nobody else reads."""
        for node in self.graph.nodes:
            is_relu = (node.op == "call_function" and node.target in (torch.relu, F.relu)) or (
                node.op == "call_module"
                and all(
                    type(gm.get_submodule(str(node.target))) is nn.ReLU
                    for gm in (self.gm_a, self.gm_b)
                )
            )
            if not is_relu or len(node.args) != 1 or node.kwargs:
                continue
            src = node.args[0]
            if (
                not isinstance(src, fx.Node)
                or src.op in ("placeholder", "get_attr")
                or len(src.users) != 1
                or src.name in self.tapped
            ):
                continue
            node.op, node.target = "call_function", torch.relu_

    @torch.no_grad()
    def run(self, x: torch.Tensor, callback: TapCallback) -> None:
        """Run both models on ``x``; call ``callback(node, value_a, value_b)`` at each tap."""
        if not self._prepared:
            self._prepare()
        with scratch_buffers(self.workspace):
            self._run(x, callback)

    def _run(self, x: torch.Tensor, callback: TapCallback) -> None:
        env_a: dict[fx.Node, Any] = {}
        env_b: dict[fx.Node, Any] = {}
        ia, ib = self.interp_a, self.interp_b
        last_uses = ia.user_to_last_uses
        report_as = self.report_as
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
                callback(report_as.get(node.name, node.name), env_a[node], env_b[node])
            for dead in last_uses.get(node, ()):
                env_a.pop(dead, None)
                env_b.pop(dead, None)
        env_a.clear()
        env_b.clear()
