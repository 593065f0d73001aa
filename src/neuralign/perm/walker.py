"""The graph walker of permutation discovery: interprets each traced node with the op table
(:mod:`neuralign.perm._rules`) and records groups (see :mod:`neuralign.perm.groups`)."""

from __future__ import annotations

from typing import Any

from torch import fx

from neuralign.perm._rules import lookup_rule
from neuralign.perm.fxtrace import describe_node, node_shape
from neuralign.perm.groups import _GraphRecord, _Unsupported
from neuralign.perm.rules.types import FIXED, Call, Feat, Heads, Info, Param, Split
from neuralign.perm.specbuild import SpecBuilder


class Walker(SpecBuilder):
    """Interprets traced graphs into permutation groups (union-find over group ids).

    Rules in :mod:`neuralign.perm._rules` call its methods; it is not public API.
    """

    # ------------------------------------------------------------------ rule API
    @property
    def node(self) -> fx.Node:
        assert self._node is not None
        return self._node

    def has_key(self, key: str) -> bool:
        """Whether ``key`` is a state-dict key of the model."""
        return key in self.state_keys

    def info(self, value: Any) -> Info:
        """Info of an argument (``None`` for non-tensors)."""
        assert self._rec is not None
        if isinstance(value, fx.Node):
            return self._rec.infos.get(value)
        return None

    def shape(self, value: Any) -> tuple[int, ...] | None:
        """Shape of a tensor-valued node (from shape propagation), else ``None``."""
        return node_shape(value)

    def set_kind(self, kind: str) -> None:
        """Override the current node's tap kind."""
        assert self._rec is not None
        self._rec.kinds[self.node] = kind

    def fixed_out(self) -> Info:
        """Info of a tensor unchanged by every permutation."""
        return FIXED

    def _gids_in(self, info: Info) -> list[int]:
        if isinstance(info, (Feat, Split, Heads)):
            return info.gids()
        if isinstance(info, (tuple, list)):
            return [g for x in info for g in self._gids_in(x)]
        return []

    def unsupported(self, reason: str) -> Info:
        """Report the current node as unsupported: its input groups are frozen and its output
        is treated as fixed. Discovery raises unless the caller froze those groups."""
        node = self.node
        gids = [g for a in node.all_input_nodes for g in self._gids_in(self.info(a))]
        stack = node.meta.get("nn_module_stack") or {}
        module = next(reversed(stack.values()))[0] if stack else None
        self.unsupported_ops.append(_Unsupported(describe_node(node), reason, gids, module))
        return FIXED

    def generic(self, call: Call) -> Info:
        """Fallback for ops without a row: fixed in, fixed out; otherwise unsupported."""
        node = call.node
        ins = [self.info(a) for a in node.all_input_nodes]
        if any(self._gids_in(i) for i in ins):
            return self.unsupported("the op is not in the table of neuralign.perm._rules")
        for i in ins:
            if isinstance(i, Param):
                self.pin(i.key)
        if call.module is not None:
            keys = list(call.module.state_dict())
            for k in keys:
                self.pin(f"{call.prefix}.{k}")
            if keys:
                self.opaque.setdefault(call.prefix, type(call.module).__name__)
        if self.shape(node) is None and not any(i is not None for i in ins):
            return None
        return FIXED

    # ------------------------------------------------------------------ walking
    def walk(self, graph: fx.Graph, mode: str) -> _GraphRecord:
        """Interpret every node of ``graph`` (traced in ``mode``)."""
        rec = _GraphRecord(mode, graph)
        self._rec = rec
        for node in graph.nodes:
            self._node = node
            module = self.modules.get(str(node.target)) if node.op == "call_module" else None
            kind = "other"
            if node.op == "placeholder":
                info: Info = FIXED
            elif node.op == "get_attr":
                key = str(node.target)
                info = Param(key if key in self.state_keys else None)
            elif node.op == "output":
                for a in node.all_input_nodes:
                    self.freeze(self._gids_in(rec.infos.get(a)), "it reaches a network output")
                kind = "output"
                info = None
            elif node.op == "call_module" and str(node.target) in self.leaf:
                for a in node.all_input_nodes:
                    self.freeze(self._gids_in(rec.infos.get(a)), f"input of leaf {node.target}")
                assert module is not None
                for k in module.state_dict():
                    self.pin(f"{node.target}.{k}")
                info = FIXED
            else:
                rule = lookup_rule(node, module)
                call = Call(node, module)
                heads = any(isinstance(self.info(a), (Split, Heads)) for a in node.all_input_nodes)
                if rule is None:
                    info = self.generic(call)
                elif heads and not rule.heads:
                    info = self.unsupported(
                        f"{rule.name} of a tensor split into attention heads is not supported"
                    )
                else:
                    kind = rule.kind
                    rec.kinds[node] = kind
                    info = rule.handler(self, call)
                    kind = rec.kinds[node]
            rec.infos[node] = info
            rec.kinds[node] = kind
        self._rec = None
        self._node = None
        return rec
