"""Run two networks of one architecture node by node, in lock-step, on the same input.

Alignment needs, at every tap, the activations of model A *and* model B for the same
images. Capturing every tap of both models first would hold all tapped activations of both
at once (several times the memory of a plain forward pass). Instead both models' traced
graphs are walked together: after each node the tapped values are handed to a callback and
every value past its last use is freed, so at any moment only the live tensors of the
current layer of each model exist. No hooks are installed on the models.
"""

from __future__ import annotations

import operator
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

# Modules and functions whose output is a new tensor (never a view or the input itself):
# only such values may be overwritten in place once their one reader runs.
_FRESH_MODULES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)
_FRESH_FUNCTIONS = (operator.add, torch.add, operator.mul, torch.mul, torch.cat, F.linear)


def _add_into(x: torch.Tensor, y: Any) -> torch.Tensor:
    """``x + y``, written into ``x`` when that gives the same result (no broadcast of x)."""
    if (
        isinstance(y, torch.Tensor)
        and x.shape == torch.broadcast_shapes(x.shape, y.shape)
        and x.dtype == torch.result_type(x, y)
        and not x.requires_grad
    ):
        return x.add_(y)
    return x + y


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
        channels_last: run 4-D inputs, and the folded convolutions (our copies, never the
            caller's modules), in the channels-last memory layout. ``None`` (default): on CPU
            when the models have 2-D convolutions, where oneDNN's channels-last kernels are
            faster (measured: plain ResNet32 forward passes 0.84x the time of the default
            layout on this project's 2-core machine); never on other devices. Values are
            the same up to float rounding; a graph that cannot run channels-last (a
            ``.view`` of a feature map) is detected on the first batch and run in the
            default layout. A convolution whose output comes back in the default layout (a
            one-channel input, e.g. a grey-scale stem: its strides are ambiguous) has that
            output copied to channels-last, so the rest of the walk runs there too.
    """

    def __init__(
        self,
        model_a: nn.Module,
        model_b: nn.Module,
        spec: PermutationSpec,
        pre_activation: bool,
        fold: bool = True,
        channels_last: bool | None = None,
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
        self.channels_last = channels_last
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
        if self.channels_last is None:
            params = [p for mdl in self._models for p in mdl.parameters()]
            on_cpu = all(p.device.type == "cpu" for p in params)
            convs = any(isinstance(m, nn.Conv2d) for mdl in self._models for m in mdl.modules())
            self.channels_last = on_cpu and convs
        self._fused_layout(torch.channels_last if self.channels_last else None)
        # 2-D convolutions whose output is re-laid out channels-last when it is not (see _run)
        self._conv_nodes = {
            node
            for node in self.graph.nodes
            if node.op == "call_module"
            and all(
                isinstance(gm.get_submodule(str(node.target)), nn.Conv2d)
                for gm in (self.gm_a, self.gm_b)
            )
        }

    def _fused_layout(self, fmt: torch.memory_format | None) -> None:
        """Lay the weights of our folded convolutions out in ``fmt`` (None: the default)."""
        fmt = fmt or torch.contiguous_format
        for gm in (self.gm_a, self.gm_b):
            for i in range(self.folded):
                mod = gm.get_submodule(f"_neuralign_fused_{i}")
                if isinstance(mod, nn.Conv2d):
                    mod.weight.data = mod.weight.data.contiguous(memory_format=fmt)

    def _probe_channels_last(self, x: torch.Tensor) -> None:
        """Run one image channels-last without reporting taps; fall back if the graph fails."""
        try:
            self._run(x[:1].contiguous(memory_format=torch.channels_last), lambda *_: None)
        except RuntimeError:
            self.channels_last = False
            self._fused_layout(None)

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

    def _fresh(self, node: Any) -> bool:
        """Whether ``node`` is an intermediate that only one node reads and that is a new
        tensor (not a view or alias of a value that stays live), untapped: safe to overwrite.
        """
        if not isinstance(node, fx.Node) or len(node.users) != 1 or node.name in self.tapped:
            return False
        if node.op == "call_module":
            return all(
                isinstance(gm.get_submodule(str(node.target)), _FRESH_MODULES)
                for gm in (self.gm_a, self.gm_b)
            )
        # _add_into returns its (fresh, single-use) first operand or a new sum
        return node.op == "call_function" and (
            node.target in _FRESH_FUNCTIONS or node.target is _add_into
        )

    def _relu_in_place(self) -> None:
        """Apply ReLU (and residual additions) in place on intermediates nobody else reads."""
        for node in self.graph.nodes:
            if (
                node.op == "call_function"
                and node.target in (operator.add, torch.add)
                and len(node.args) == 2
                and not node.kwargs
                and self._fresh(node.args[0])
                and isinstance(node.args[1], fx.Node)
            ):
                node.target = _add_into
                continue
            is_relu = (node.op == "call_function" and node.target in (torch.relu, F.relu)) or (
                node.op == "call_module"
                and all(
                    type(gm.get_submodule(str(node.target))) is nn.ReLU
                    for gm in (self.gm_a, self.gm_b)
                )
            )
            if not is_relu or len(node.args) != 1 or node.kwargs:
                continue
            if not self._fresh(node.args[0]):
                continue
            node.op, node.target = "call_function", torch.relu_

    @torch.no_grad()
    def run(self, x: torch.Tensor, callback: TapCallback) -> None:
        """Run both models on ``x``; call ``callback(node, value_a, value_b)`` at each tap."""
        if not self._prepared:
            self._prepare()
            if self.channels_last and x.ndim == 4 and x.shape[0] > 0:
                self._probe_channels_last(x)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with scratch_buffers(self.workspace):
            self._run(x, callback)

    def _run(self, x: torch.Tensor, callback: TapCallback) -> None:
        env_a: dict[fx.Node, Any] = {}
        env_b: dict[fx.Node, Any] = {}
        ia, ib = self.interp_a, self.interp_b
        last_uses = ia.user_to_last_uses
        report_as = self.report_as
        # A convolution of a one-channel input (a grey-scale stem) sees ambiguous strides and
        # answers in the default layout; everything after it would then run there (and a
        # 16-channel default-layout convolution is several times slower on CPU): re-lay its
        # output out channels-last, one copy.
        relayout = self._conv_nodes if self.channels_last else ()
        cl = torch.channels_last
        for node in self.graph.nodes:
            if node.op == "placeholder":
                env_a[node] = x
                env_b[node] = x
                continue
            if node.op == "output":
                break
            ia.env = env_a
            va = env_a[node] = ia.run_node(node)
            ib.env = env_b
            vb = env_b[node] = ib.run_node(node)
            if node in relayout and va.ndim == 4 and not va.is_contiguous(memory_format=cl):
                env_a[node] = va.contiguous(memory_format=cl)
                env_b[node] = vb.contiguous(memory_format=cl)
            if node.name in self.tapped:
                callback(report_as.get(node.name, node.name), env_a[node], env_b[node])
            for dead in last_uses.get(node, ()):
                env_a.pop(dead, None)
                env_b.pop(dead, None)
        env_a.clear()
        env_b.clear()
