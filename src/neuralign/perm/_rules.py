"""The op table of permutation discovery: how each op passes, starts or merges channel groups.

Every tensor flowing through the traced graph carries an *info*:

* :class:`Feat` -- its channel axis is made of segments, each a run of units of one group
  (``gid``) or of fixed (never permuted) channels (``gid=None``); a unit may own ``inner``
  consecutive entries (after a flatten of ``C x H x W``).
* :data:`FIXED` -- the tensor's values do not change under any permutation of the spec (the
  network input, anything computed from fixed tensors only).
* :class:`Param` -- a parameter or buffer read with ``get_attr`` (functional layers).
* ``None`` -- not a tensor (sizes, shapes, Python scalars); a tuple of infos for tuples.

:data:`RULES` is the one table: one row per op kind, listing its module classes, functions and
tensor-method names, a handler computing the output info, and a *kind* used to place taps.
Adding support for an op is adding one row. Anything without a row is handled soundly: if no
input carries a permuted group its output is fixed; otherwise discovery reports it as
unsupported (:class:`neuralign.errors.UnsupportedOpError`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from neuralign.perm.rules.attention import _matmul, _mha, _pieces, _sdpa
from neuralign.perm.rules.elementwise import (
    _constant,
    _elementwise,
    _getattr,
    _meta,
    _passthrough,
    _pool,
    _reduce,
    _softmax,
)
from neuralign.perm.rules.layers import (
    _channel_norm,
    _conv,
    _embedding,
    _group_norm,
    _layer_norm,
    _linear,
)
from neuralign.perm.rules.recurrent import _rnn
from neuralign.perm.rules.shape import (
    _cat,
    _expand,
    _getitem,
    _permute_dims,
    _pixel_shuffle,
    _resample,
    _reshape,
)
from neuralign.perm.rules.types import (  # noqa: F401
    FIXED,
    Call,
    Feat,
    Handler,
    Heads,
    Info,
    Param,
    Rule,
    Seg,
    Split,
)

__all__ = [
    "FIXED",
    "RULES",
    "Call",
    "Feat",
    "Heads",
    "Param",
    "Rule",
    "Seg",
    "Split",
    "lookup_rule",
]


_ACT_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Mish,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
)
_ACT_FUNCTIONS: tuple[Callable[..., Any], ...] = (
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    F.relu6,
    F.gelu,
    F.silu,
    torch.tanh,
    F.tanh,
    torch.sigmoid,
    F.sigmoid,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.celu,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.mish,
    F.softplus,
    F.softsign,
    torch.exp,
    torch.log,
    torch.sqrt,
    torch.rsqrt,
    torch.abs,
    torch.neg,
    torch.square,
    torch.clamp,
    torch.clip,
    operator.neg,
    operator.pos,
    operator.abs,
    # binary arithmetic
    operator.add,
    operator.iadd,
    operator.sub,
    operator.isub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.itruediv,
    operator.pow,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
)
_ACT_METHODS = (
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "abs",
    "neg",
    "square",
    "clamp",
    "clamp_",
    "clip",
    "pow",
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "maximum",
    "minimum",
    "masked_fill",
)

#: The op table. One row per op kind; order does not matter except that the first row
#: whose module classes match (by ``isinstance``) wins.
RULES: tuple[Rule, ...] = (
    Rule(
        "convolution",
        "producer",
        _conv,
        modules=(
            nn.Conv1d,
            nn.Conv2d,
            nn.Conv3d,
            nn.ConvTranspose1d,
            nn.ConvTranspose2d,
            nn.ConvTranspose3d,
        ),
        functions=(
            F.conv1d,
            F.conv2d,
            F.conv3d,
            F.conv_transpose1d,
            F.conv_transpose2d,
            F.conv_transpose3d,
        ),
    ),
    Rule("linear", "producer", _linear, modules=(nn.Linear,), functions=(F.linear,)),
    Rule("embedding", "producer", _embedding, modules=(nn.Embedding,), functions=(F.embedding,)),
    Rule(
        "batch/instance norm",
        "norm",
        _channel_norm,
        modules=(nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm),
        functions=(F.batch_norm, F.instance_norm),
    ),
    Rule("layer norm", "norm", _layer_norm, modules=(nn.LayerNorm,), functions=(F.layer_norm,)),
    Rule("group norm", "norm", _group_norm, modules=(nn.GroupNorm,), functions=(F.group_norm,)),
    Rule(
        "elementwise",
        "act",
        _elementwise,
        modules=_ACT_MODULES,
        functions=_ACT_FUNCTIONS,
        methods=_ACT_METHODS,
        heads=True,
    ),
    Rule("multi-head attention", "producer", _mha, modules=(nn.MultiheadAttention,)),
    Rule("recurrent layer", "producer", _rnn, modules=(nn.LSTM, nn.GRU, nn.RNN)),
    Rule(
        "matmul (attention products)",
        "shape",
        _matmul,
        functions=(operator.matmul, torch.matmul, torch.bmm),
        methods=("matmul", "bmm"),
        heads=True,
    ),
    Rule(
        "scaled dot-product attention",
        "shape",
        _sdpa,
        functions=(F.scaled_dot_product_attention,),
        heads=True,
    ),
    Rule(
        "chunk / split / unbind",
        "shape",
        _pieces,
        functions=(torch.chunk, torch.split, torch.unbind),
        methods=("chunk", "split", "unbind"),
        heads=True,
    ),
    Rule(
        "pooling",
        "shape",
        _pool,
        modules=(
            nn.MaxPool1d,
            nn.MaxPool2d,
            nn.MaxPool3d,
            nn.AvgPool1d,
            nn.AvgPool2d,
            nn.AvgPool3d,
            nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveAvgPool3d,
            nn.AdaptiveMaxPool1d,
            nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d,
        ),
        functions=(
            F.max_pool1d,
            F.max_pool2d,
            F.max_pool3d,
            F.avg_pool1d,
            F.avg_pool2d,
            F.avg_pool3d,
            F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d,
            F.adaptive_avg_pool3d,
            F.adaptive_max_pool1d,
            F.adaptive_max_pool2d,
            F.adaptive_max_pool3d,
        ),
    ),
    Rule(
        "dropout / identity / dtype",
        "shape",
        _passthrough,
        modules=(
            nn.Dropout,
            nn.Dropout1d,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.AlphaDropout,
            nn.Identity,
        ),
        functions=(F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout),
        methods=("contiguous", "clone", "detach", "float", "double", "half", "to", "type_as"),
        heads=True,
    ),
    Rule(
        "softmax",
        "shape",
        _softmax,
        modules=(nn.Softmax, nn.LogSoftmax),
        functions=(F.softmax, F.log_softmax, torch.softmax, torch.log_softmax),
        methods=("softmax", "log_softmax"),
        heads=True,
    ),
    Rule(
        "reduction",
        "shape",
        _reduce,
        functions=(torch.mean, torch.sum, torch.amax, torch.amin),
        methods=("mean", "sum", "amax", "amin"),
    ),
    Rule(
        "reshape",
        "shape",
        _reshape,
        modules=(nn.Flatten, nn.Unflatten),
        functions=(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten),
        methods=("view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten"),
        heads=True,
    ),
    Rule(
        "permute / transpose",
        "shape",
        _permute_dims,
        functions=(torch.permute, torch.transpose, torch.swapaxes),
        methods=("permute", "transpose", "swapaxes"),
        heads=True,
    ),
    Rule("cat", "shape", _cat, functions=(torch.cat, torch.concat, torch.concatenate)),
    Rule(
        "expand",
        "shape",
        _expand,
        functions=(torch.broadcast_to,),
        methods=("expand", "expand_as", "broadcast_to"),
    ),
    Rule(
        "resample / pad",
        "shape",
        _resample,
        modules=(
            nn.Upsample,
            nn.ZeroPad1d,
            nn.ZeroPad2d,
            nn.ZeroPad3d,
            nn.ConstantPad1d,
            nn.ConstantPad2d,
            nn.ConstantPad3d,
            nn.ReflectionPad1d,
            nn.ReflectionPad2d,
            nn.ReflectionPad3d,
            nn.ReplicationPad1d,
            nn.ReplicationPad2d,
            nn.ReplicationPad3d,
        ),
        functions=(
            F.interpolate,
            F.upsample,
            F.upsample_nearest,
            F.upsample_bilinear,
            F.pad,
        ),
    ),
    Rule(
        "pixel (un)shuffle",
        "shape",
        _pixel_shuffle,
        modules=(nn.PixelShuffle, nn.PixelUnshuffle),
        functions=(F.pixel_shuffle, F.pixel_unshuffle, torch.pixel_shuffle, torch.pixel_unshuffle),
    ),
    Rule("getitem", "shape", _getitem, functions=(operator.getitem,), heads=True),
    Rule(
        "constant of a tensor's shape",
        "meta",
        _constant,
        functions=(torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like),
        methods=("new_zeros", "new_ones", "new_full", "new_empty"),
    ),
    Rule("attribute", "meta", _getattr, functions=(getattr,), heads=True),
    Rule("size / dim", "meta", _meta, methods=("size", "dim", "numel"), heads=True),
)

_BY_FUNCTION: dict[Any, Rule] = {f: r for r in RULES for f in r.functions}
_BY_METHOD: dict[str, Rule] = {m: r for r in RULES for m in r.methods}


def lookup_rule(node: fx.Node, module: nn.Module | None) -> Rule | None:
    """Return the row of :data:`RULES` for ``node`` (``None`` if the op is not in the table)."""
    if node.op == "call_module":
        for rule in RULES:
            if rule.modules and isinstance(module, rule.modules):
                return rule
        return None
    if node.op == "call_function":
        try:
            return _BY_FUNCTION.get(node.target)
        except TypeError:  # unhashable target
            return None
    if node.op == "call_method":
        return _BY_METHOD.get(str(node.target))
    return None


def describe_rules() -> Sequence[str]:
    """One line per row of the table (for documentation)."""
    return [f"{r.name} ({r.kind})" for r in RULES]
