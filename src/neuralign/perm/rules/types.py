"""Shared types of the op table: the infos a traced tensor carries, a call, a rule row.

See :mod:`neuralign.perm._rules` for what each info means.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import fx, nn

if TYPE_CHECKING:
    from neuralign.perm.walker import Walker


@dataclass(frozen=True)
class Seg:
    """A run of ``size`` units of group ``gid`` (``None``: fixed channels) on a channel axis."""

    gid: int | None
    size: int
    inner: int = 1

    @property
    def width(self) -> int:
        """Number of indices the run occupies on the axis."""
        return self.size * self.inner


@dataclass(frozen=True)
class Feat:
    """A tensor whose channel axis ``axis`` is made of ``segs``."""

    axis: int
    segs: tuple[Seg, ...]

    @property
    def width(self) -> int:
        """Length of the channel axis."""
        return sum(s.width for s in self.segs)

    def gids(self) -> list[int]:
        """Group ids present (fixed segments excluded)."""
        return [s.gid for s in self.segs if s.gid is not None]

    def offsets(self) -> Iterator[tuple[int, Seg]]:
        """Yield ``(start, seg)`` for every segment."""
        start = 0
        for s in self.segs:
            yield start, s
            start += s.width


@dataclass(frozen=True)
class Split:
    """A tensor whose units are split into attention heads: axis ``head`` enumerates the
    blocks (heads) of group ``gids[p]`` and axis ``dim`` the units within a head. A fused
    q/k/v projection reshaped to ``(..., 3, heads, head_dim)`` has a ``part`` axis selecting
    among ``gids`` (one group per part)."""

    head: int
    dim: int
    gids_: tuple[int, ...]
    part: int | None = None

    def gids(self) -> list[int]:
        """Group ids present."""
        return list(self.gids_)

    def moved(self, where: Callable[[int], int]) -> Split:
        """The same layout with every axis mapped by ``where``."""
        part = None if self.part is None else where(self.part)
        return Split(where(self.head), where(self.dim), self.gids_, part)


@dataclass(frozen=True)
class Heads:
    """Attention scores or probabilities: axis ``axis`` enumerates the heads (blocks) of
    group ``gid``; no axis carries within-head units."""

    axis: int
    gid: int

    def gids(self) -> list[int]:
        """Group ids present."""
        return [self.gid]


class _Fixed:
    """Sentinel info: a tensor unchanged by every permutation of the spec."""

    def __repr__(self) -> str:
        return "FIXED"


FIXED = _Fixed()


@dataclass(frozen=True)
class Param:
    """A tensor read with ``get_attr``: ``key`` is its state-dict key (``None`` if it is not
    in the state dict, e.g. a non-persistent buffer or a traced constant).

    ``dims`` describes a *view* of the parameter made by reshape-like ops (``None``/``:``
    indexing, ``unsqueeze``, ``view`` adding size-1 axes, ``expand``): entry ``d`` is the
    parameter axis that dim ``d`` of the view shows, or ``None`` for an axis along which the
    view is constant (a new or expanded size-1 axis). ``dims=None``: the parameter itself.
    """

    key: str | None
    dims: tuple[int | None, ...] | None = None

    def axis_of(self, d: int) -> int | None:
        """Parameter axis shown by dim ``d`` of this view (``None``: constant along it)."""
        if self.dims is None:
            return d
        return self.dims[d] if 0 <= d < len(self.dims) else None


Info = Any  # Feat | Split | Heads | _Fixed | Param | tuple | None


@dataclass
class Call:
    """One node being interpreted by a rule.

    Attributes:
        node: The fx node.
        module: The called module for ``call_module`` nodes, else ``None``.
    """

    node: fx.Node
    module: nn.Module | None

    @property
    def prefix(self) -> str:
        """Qualified module name (``call_module``) used to build state-dict keys."""
        return str(self.node.target)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Return an argument given positionally (``index``) or by keyword (``name``)."""
        if name in self.node.kwargs:
            return self.node.kwargs[name]
        if index < len(self.node.args):
            return self.node.args[index]
        return default


Handler = Callable[["Walker", Call], Info]


@dataclass(frozen=True)
class Rule:
    """One row of the op table.

    Attributes:
        name: Short description (for docs and error messages).
        kind: Role for tap placement: ``"producer"`` (starts a group: conv, linear),
            ``"perchannel"`` (depthwise conv), ``"norm"``, ``"act"`` (elementwise),
            ``"merge"`` (elementwise op of several permuted tensors; set by the handler),
            ``"shape"`` (pooling, reshape, dropout, cat...), ``"meta"`` (sizes).
        handler: Computes the output info.
        modules: Module classes handled (``call_module``; subclasses match too).
        functions: Callables handled (``call_function``).
        methods: Tensor method names handled (``call_method``).
        heads: Whether the handler understands tensors split into attention heads
            (:class:`Split`, :class:`Heads`); other rules refuse them.
    """

    name: str
    kind: str
    handler: Handler
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[Callable[..., Any], ...] = ()
    methods: tuple[str, ...] = ()
    heads: bool = False
