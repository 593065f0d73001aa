"""The records of a permutation spec: axis members, activation taps, groups.

See :mod:`neuralign.perm.spec` for what they mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from neuralign.errors import NeuralignError

if TYPE_CHECKING:
    pass


class SpecError(NeuralignError, ValueError):
    """A permutation spec is malformed or does not fit a state dict."""


@dataclass(frozen=True)
class AxisMember:
    """One axis of one state-dict entry that belongs to a permutation group.

    Attributes:
        key: State-dict key, e.g. ``"layer1.0.conv1.weight"``.
        axis: Axis of ``state[key]`` that the group permutes.
        start: Index on ``axis`` where the group's block begins (``> 0`` after a ``cat``).
        inner: Consecutive indices per unit (``H * W`` for a Linear after a flatten).
        row_blocks: ``> 1`` for the input axis of a grouped convolution with that many
            groups: the axis holds one block's local unit index, and row block ``j`` of
            axis 0 sees block ``j`` of the group (a block-diagonal member; ``start = 0``,
            ``inner = 1``).
    """

    key: str
    axis: int
    start: int = 0
    inner: int = 1
    row_blocks: int = 1

    def indices(self, size: int) -> range:
        """Return the range of indices on ``axis`` covered by a group of ``size`` units."""
        return range(self.start, self.start + self.span(size))

    def span(self, size: int) -> int:
        """Number of indices on ``axis`` a group of ``size`` units occupies."""
        return size // self.row_blocks * self.inner

    def __str__(self) -> str:
        extra = ""
        if self.start:
            extra += f"+{self.start}"
        if self.inner != 1:
            extra += f"x{self.inner}"
        if self.row_blocks != 1:
            extra += f"/{self.row_blocks}"
        return f"{self.key}[{self.axis}{extra}]"


@dataclass(frozen=True)
class Tap:
    """Where the activations of a group's units can be read during a forward pass.

    The tensor is the output of fx node ``node`` of the model traced in mode ``mode``; units
    ``0..size-1`` of the group are its channels ``[start, start + size)`` along ``dim``.

    Attributes:
        node: Name of the fx node whose output holds the (post-activation) units.
        module: Qualified module name if that node is a ``call_module``, else ``None``.
        start: First channel of the group in that tensor.
        size: Number of units (the group size).
        pre_node: Node holding the pre-activation values (the input of the last activation;
            equal to ``node`` when no activation follows the last layer).
        pre_module: Qualified module name of ``pre_node`` if it is a ``call_module``.
        dim: Channel dimension of the tapped tensor (1 for ``(N, C, ...)`` tensors).
        mode: ``"eval"`` or ``"train"``: the mode in which the model was traced (the graphs
            differ when ``forward`` branches on ``self.training``, e.g. auxiliary heads).
        proj: For units computed inside an opaque module (the query/key/value units of
            ``nn.MultiheadAttention``): the state-dict key of a weight matrix; the tapped
            values are then ``F.linear(x, W[proj_start:proj_start+size], b[...])`` of the
            node's output ``x`` (with the model's own weights), units on the last dim.
        proj_start: First row of ``proj`` (and of ``proj_bias``).
        proj_bias: State-dict key of the bias of that projection, if any.
    """

    node: str
    module: str | None
    start: int
    size: int
    pre_node: str | None = None
    pre_module: str | None = None
    dim: int = 1
    mode: str = "eval"
    proj: str | None = None
    proj_start: int = 0
    proj_bias: str | None = None

    def read(self, value: torch.Tensor, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The group's units from the tapped node's value (``state``: the model's state
        dict, for projection taps)."""
        if self.proj is not None:
            rows = slice(self.proj_start, self.proj_start + self.size)
            bias = state[self.proj_bias][rows] if self.proj_bias else None
            return torch.nn.functional.linear(value, state[self.proj][rows], bias)
        return value.narrow(self.dim, self.start, self.size)


@dataclass(frozen=True)
class Group:
    """A permutation group: ``size`` units permuted together on every member axis.

    A *structured* group (``blocks > 1``) is split into ``blocks`` consecutive blocks of
    ``size // blocks`` units and only admits permutations that map whole blocks to blocks
    (a block permutation times one permutation within each block): the channels of a
    GroupNorm, the dimensions of attention heads. Groups with the same ``link`` share their
    block permutation (the heads of one attention layer move together in its query/key and
    value groups).

    Attributes:
        name: Human-readable name derived from the producing layer
            (e.g. ``"layer1.0.conv1"``, or ``"layer2.residual"`` for a residual stream).
        size: Number of units.
        members: The state-dict axes the group permutes, in forward order.
        taps: Where the group's unit activations can be read (may be empty).
        blocks: Number of blocks (1: any permutation).
        link: Name shared by groups whose block permutations must be equal.
    """

    name: str
    size: int
    members: tuple[AxisMember, ...]
    taps: tuple[Tap, ...] = ()
    blocks: int = 1
    link: str | None = None

    @property
    def block_size(self) -> int:
        """Units per block."""
        return self.size // self.blocks
