"""Permutation specs: which axes of which state-dict entries share a permutation group.

A *group* ``g`` of size ``n`` is a set of hidden units that can be reordered together without
changing the function a network computes. Each *member* of the group is one axis of one
state-dict entry: unit ``i`` of ``g`` occupies the indices ``start + i * inner + r``
(``r < inner``) of axis ``axis`` of ``state[key]``. ``inner > 1`` appears for a Linear layer
after a flatten of ``C x H x W`` features (each channel owns ``H * W`` consecutive columns);
``start > 0`` for the consumer of a ``torch.cat`` along channels.

A *block-diagonal* member (``row_blocks = b > 1``) is the input axis of a grouped
convolution (``groups = b``): its axis holds only the local index of a unit inside its block
(``size // b`` entries), axis 0 is cut into ``b`` row blocks, and row block ``j`` sees block
``j`` of the group -- so the permutation applied to its columns depends on the row block (see
:func:`neuralign.perm.apply.apply_permutation`). Its group is structured with ``b`` blocks and
linked to the group of axis 0, which shares its block permutation.

A spec is plain data: it is discovered by :func:`neuralign.perm.discover_spec`, can be written
by hand with :meth:`PermutationSpec.from_axes`, and round-trips through JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from neuralign.errors import NeuralignError
from neuralign.io.atomic import atomic_write_text

__all__ = [
    "AxisMember",
    "Group",
    "PermutationSpec",
    "SpecError",
    "Coverage",
    "Tap",
    "coverage",
    "format_spec_table",
]

_FORMAT = "neuralign.permutation_spec"
_VERSION = 1


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


@dataclass
class PermutationSpec:
    """The permutation symmetry of a network, as data.

    Attributes:
        groups: Groups by name, in forward (topological) order.
        meta: Free-form, JSON-serialisable information about how the spec was made (for
            discovered specs: the traced modes and the modules treated as leaves, which
            :mod:`neuralign.perm.taps` needs to re-trace the model).
    """

    groups: dict[str, Group]
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_axes(
        cls,
        axes: Mapping[str, Sequence[tuple[Any, ...]]],
        *,
        state_dict: Mapping[str, torch.Tensor] | None = None,
        sizes: Mapping[str, int] | None = None,
        blocks: Mapping[str, int] | None = None,
        links: Mapping[str, str] | None = None,
    ) -> PermutationSpec:
        """Build a spec by hand from ``{group: [(key, axis[, start[, inner[, row_blocks]]]),
        ...]}``.

        Group sizes come from ``sizes`` or are inferred from ``state_dict`` as the smallest
        ``(shape[axis] - start) // inner`` over the group's members (the producing layer's
        output axis is always exact).

        Example:
            >>> spec = PermutationSpec.from_axes(
            ...     {"fc1": [("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)]},
            ...     sizes={"fc1": 8},
            ... )
            >>> spec.groups["fc1"].size
            8

        Args:
            axes: Members of each group, in forward order.
            state_dict: Used to infer group sizes not given in ``sizes``.
            sizes: Explicit group sizes.
            blocks: Block structure of structured groups (see :class:`Group`).
            links: Link names of groups sharing their block permutation.

        Returns:
            The spec (taps empty).

        Raises:
            SpecError: If a tuple is malformed or a size cannot be determined.
        """
        groups: dict[str, Group] = {}
        for name, items in axes.items():
            members: list[AxisMember] = []
            for item in items:
                if not 2 <= len(item) <= 5:
                    raise SpecError(
                        f"group {name!r}: member {item!r} must be "
                        "(key, axis[, start[, inner[, row_blocks]]])"
                    )
                members.append(AxisMember(str(item[0]), *(int(v) for v in item[1:])))
            if sizes is not None and name in sizes:
                size = int(sizes[name])
            elif state_dict is not None:
                try:
                    size = min(
                        (state_dict[m.key].shape[m.axis] - m.start) // m.inner * m.row_blocks
                        for m in members
                    )
                except (KeyError, IndexError, ValueError) as exc:
                    raise SpecError(f"cannot infer the size of group {name!r}: {exc}") from exc
            else:
                raise SpecError(f"group {name!r}: pass sizes= or state_dict= to give its size")
            groups[name] = Group(
                name,
                size,
                tuple(members),
                blocks=int((blocks or {}).get(name, 1)),
                link=(links or {}).get(name),
            )
        spec = cls(groups)
        spec.check_structure()
        return spec

    # ------------------------------------------------------------------ queries
    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, name: str) -> Group:
        return self.groups[name]

    @property
    def sizes(self) -> dict[str, int]:
        """Group sizes by name."""
        return {g.name: g.size for g in self.groups.values()}

    @property
    def taps(self) -> dict[str, tuple[Tap, ...]]:
        """Taps by group name."""
        return {g.name: g.taps for g in self.groups.values()}

    def state_keys(self) -> set[str]:
        """Return every state-dict key the spec permutes."""
        return {m.key for g in self.groups.values() for m in g.members}

    def equivalent(self, other: PermutationSpec) -> bool:
        """Whether two specs permute the same axes the same way (names, sizes, member sets).

        Taps, member order and ``meta`` are ignored: a hand-written spec without taps is
        equivalent to the discovered one.
        """
        if list(self.groups) != list(other.groups):
            return False
        for name, g in self.groups.items():
            h = other.groups[name]
            if g.size != h.size or set(g.members) != set(h.members) or g.blocks != h.blocks:
                return False
        return True

    def validate(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Check that the spec fits ``state_dict``.

        Every member key must exist, every member axis must hold the group's block
        (``shape[axis] >= start + size * inner``; ``size / row_blocks`` local indices for a
        block-diagonal member), and no two members may claim overlapping indices of the
        same axis.

        Raises:
            SpecError: Naming the first group and member that do not fit.
        """
        claimed: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
        self.check_structure()
        for g in self.groups.values():
            if g.size < 1:
                raise SpecError(f"group {g.name!r} has size {g.size}; sizes must be >= 1")
            for m in g.members:
                if m.key not in state_dict:
                    raise SpecError(
                        f"group {g.name!r}: member {m} names key {m.key!r}, which is not in "
                        "the state dict (was the spec made for another architecture?)"
                    )
                shape = tuple(state_dict[m.key].shape)
                if not -len(shape) <= m.axis < len(shape):
                    raise SpecError(
                        f"group {g.name!r}: member {m} has axis {m.axis} but {m.key!r} has "
                        f"shape {shape}"
                    )
                axis = m.axis % len(shape)
                end = m.start + m.span(g.size)
                if m.row_blocks > 1 and (axis == 0 or shape[0] % m.row_blocks):
                    raise SpecError(
                        f"group {g.name!r}: block-diagonal member {m} needs axis 0 of "
                        f"{m.key!r} (shape {shape}) cut into {m.row_blocks} row blocks"
                    )
                if m.start < 0 or m.inner < 1 or shape[axis] < end:
                    raise SpecError(
                        f"group {g.name!r} of size {g.size}: member {m} needs indices "
                        f"[{m.start}, {end}) on axis {m.axis} but {m.key!r} has shape {shape}"
                    )
                for lo, hi, other in claimed.get((m.key, axis), []):
                    if lo < end and m.start < hi:
                        raise SpecError(
                            f"groups {other!r} and {g.name!r} both claim indices of "
                            f"{m.key!r} axis {axis}"
                        )
                claimed.setdefault((m.key, axis), []).append((m.start, end, g.name))

    def check_structure(self) -> None:
        """Check block structures: ``blocks`` divides ``size``; linked groups agree on the
        number of blocks; a block-diagonal member (grouped convolution input,
        ``row_blocks > 1``) belongs to a group of ``row_blocks`` blocks linked to the group
        that holds axis 0 of the same tensor (their block permutations must be equal).

        Raises:
            SpecError: Naming the group.
        """
        links: dict[str, tuple[str, int]] = {}
        rows: dict[str, set[str]] = {}  # link -> keys whose axis 0 a linked group permutes
        for g in self.groups.values():
            if g.blocks < 1 or g.size % g.blocks:
                raise SpecError(
                    f"group {g.name!r}: {g.blocks} blocks do not divide its {g.size} units"
                )
            if g.link is not None:
                first = links.setdefault(g.link, (g.name, g.blocks))
                if first[1] != g.blocks:
                    raise SpecError(
                        f"groups {first[0]!r} and {g.name!r} share link {g.link!r} but have "
                        f"{first[1]} and {g.blocks} blocks"
                    )
                rows.setdefault(g.link, set()).update(
                    m.key for m in g.members if m.axis == 0 and m.row_blocks == 1
                )
        for g in self.groups.values():
            for m in g.members:
                if m.row_blocks == 1:
                    continue
                if m.row_blocks < 1 or m.start != 0 or m.inner != 1 or m.axis == 0:
                    raise SpecError(
                        f"group {g.name!r}: block-diagonal member {m} must have start 0, "
                        "inner 1 and an axis other than 0"
                    )
                if g.blocks != m.row_blocks:
                    raise SpecError(
                        f"group {g.name!r}: block-diagonal member {m} has {m.row_blocks} row "
                        f"blocks but the group {g.blocks} blocks"
                    )
                if g.link is None or m.key not in rows.get(g.link, set()):
                    raise SpecError(
                        f"group {g.name!r}: block-diagonal member {m} (a grouped "
                        "convolution) needs the group permuting axis 0 of "
                        f"{m.key!r} to be linked to it (they share one block permutation)"
                    )

    def block_diagonal(self) -> list[tuple[str, AxisMember]]:
        """``(group, member)`` for every block-diagonal member (grouped convolutions)."""
        return [(g.name, m) for g in self.groups.values() for m in g.members if m.row_blocks > 1]

    def families(self) -> list[list[str]]:
        """Groups whose permutations are chosen together: each linked set, and every other
        group alone (in spec order)."""
        out: list[list[str]] = []
        index: dict[str, int] = {}
        for g in self.groups.values():
            if g.link is None:
                out.append([g.name])
            elif g.link in index:
                out[index[g.link]].append(g.name)
            else:
                index[g.link] = len(out)
                out.append([g.name])
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (groups as an ordered list)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "groups": [
                {
                    "name": g.name,
                    "size": g.size,
                    "members": [
                        {
                            "key": m.key,
                            "axis": m.axis,
                            "start": m.start,
                            "inner": m.inner,
                            **({"row_blocks": m.row_blocks} if m.row_blocks != 1 else {}),
                        }
                        for m in g.members
                    ],
                    **({"blocks": g.blocks} if g.blocks != 1 else {}),
                    **({"link": g.link} if g.link is not None else {}),
                    "taps": [
                        {
                            "node": t.node,
                            "module": t.module,
                            "start": t.start,
                            "size": t.size,
                            "pre_node": t.pre_node,
                            "pre_module": t.pre_module,
                            "dim": t.dim,
                            "mode": t.mode,
                            **(
                                {
                                    "proj": t.proj,
                                    "proj_start": t.proj_start,
                                    "proj_bias": t.proj_bias,
                                }
                                if t.proj is not None
                                else {}
                            ),
                        }
                        for t in g.taps
                    ],
                }
                for g in self.groups.values()
            ],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PermutationSpec:
        """Inverse of :meth:`to_dict`.

        Raises:
            SpecError: If ``data`` is not a permutation spec of a known version.
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"not a permutation spec (a {type(data).__name__}, not an object)")
        if data.get("format") != _FORMAT:
            raise SpecError(f"not a permutation spec (format={data.get('format')!r})")
        if data.get("version") != _VERSION:
            raise SpecError(f"unsupported permutation spec version {data.get('version')!r}")
        try:
            groups: dict[str, Group] = {}
            for g in _typed(data["groups"], list, "groups"):
                name = _typed(_typed(g, dict, "group")["name"], str, "group name")
                size = _typed(g["size"], int, f"group {name!r} size")
                if size < 1:
                    raise SpecError(f"group {name!r} has size {size}; sizes must be >= 1")
                groups[name] = Group(
                    name=name,
                    size=size,
                    members=tuple(
                        _record(AxisMember, m, f"member of group {name!r}")
                        for m in _typed(g["members"], list, f"group {name!r} members")
                    ),
                    taps=tuple(
                        _record(Tap, t, f"tap of group {name!r}")
                        for t in _typed(g.get("taps", []), list, f"group {name!r} taps")
                    ),
                    blocks=_typed(g.get("blocks", 1), int, f"group {name!r} blocks"),
                    link=None
                    if g.get("link") is None
                    else _typed(g["link"], str, f"group {name!r} link"),
                )
            meta = _typed(data.get("meta", {}), dict, "meta")
        except KeyError as exc:
            raise SpecError(f"malformed permutation spec: missing field {exc}") from None
        spec = cls(groups, dict(meta))
        spec.check_structure()
        return spec

    def to_json(self, indent: int | None = 1) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> PermutationSpec:
        """Parse a spec written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise SpecError(f"permutation spec is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the spec as JSON, atomically (temporary file + rename)."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PermutationSpec:
        """Read a spec written by :meth:`save`.

        Raises:
            SpecError: If the file is missing, unreadable or not a valid spec.
        """
        from neuralign.io.files import regular_file

        regular_file(path, "permutation spec", SpecError, max_bytes=MAX_JSON_BYTES)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise SpecError(f"permutation spec not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read permutation spec {path}: {exc}") from None
        try:
            return cls.from_json(text)
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from None

    def __str__(self) -> str:
        return format_spec_table(self)


#: A spec file is read whole: refuse one larger than any real network's spec.
MAX_JSON_BYTES = 256 << 20


# Field annotations are strings (``from __future__ import annotations``).
_FIELD_TYPES: dict[Any, tuple[type, ...]] = {
    "int": (int,),
    "str": (str,),
    "str | None": (str, type(None)),
}


def _typed(value: Any, tp: type, what: str) -> Any:
    """Return ``value`` if it is a ``tp`` (``bool`` is not an ``int`` here), else raise."""
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise SpecError(
            f"malformed permutation spec: {what} must be a {tp.__name__}, got {value!r:.60}"
        )
    return value


def _record(cls: Any, raw: Any, what: str) -> Any:
    """Build the frozen dataclass ``cls`` from a JSON object, checking every field's type."""
    _typed(raw, dict, what)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SpecError(f"malformed permutation spec: {what} has unknown fields {unknown}")
    for name, value in raw.items():
        allowed = _FIELD_TYPES.get(fields[name].type, ())
        bad_bool = isinstance(value, bool) and int in allowed
        if allowed and (not isinstance(value, allowed) or bad_bool):
            raise SpecError(
                f"malformed permutation spec: {what}: {name} = {value!r:.60} has the wrong type"
            )
    try:
        rec = cls(**raw)
    except TypeError as exc:  # a required field is missing
        raise SpecError(f"malformed permutation spec: {what}: {exc}") from None
    for name in ("axis", "start", "size", "dim"):
        if isinstance(getattr(rec, name, 0), int) and getattr(rec, name, 0) < 0:
            raise SpecError(f"malformed permutation spec: {what}: {name} must be >= 0")
    for name in ("inner", "row_blocks"):
        if getattr(rec, name, 1) < 1:
            raise SpecError(f"malformed permutation spec: {what}: {name} must be >= 1")
    return rec


def _join(items: Iterable[str], limit: int | None) -> str:
    items = list(items)
    if limit is not None and len(items) > limit:
        return ", ".join(items[:limit]) + f", ... (+{len(items) - limit})"
    return ", ".join(items)


def format_spec_table(spec: PermutationSpec, max_members: int | None = 6) -> str:
    """Render a spec as a plain-text table: group, size, number of members, members.

    Members print as ``key[axis]``, with ``+start`` and ``xinner`` when not default.

    Args:
        spec: The spec.
        max_members: Members listed per group before eliding (``None``: all).

    Returns:
        The table, one line per group, with a header and a total line.
    """
    rows = [
        (
            g.name,
            str(g.size) if g.blocks == 1 else f"{g.size}={g.blocks}x{g.block_size}",
            str(len(g.members)),
            _join(map(str, g.members), max_members),
        )
        for g in spec.groups.values()
    ]
    header = ("group", "size", "#members", "members")
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(3)]
    lines = [
        f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}  {header[3]}"
    ]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")
    total = sum(g.size for g in spec.groups.values())
    lines.append(f"{len(rows)} groups, {total} units")
    return "\n".join(lines)


@dataclass(frozen=True)
class Coverage:
    """What a spec permutes, and what it leaves alone and why.

    Attributes:
        groups: Number of permutation groups.
        units: Total units over all groups.
        parameters: Learnable tensors of the model (``named_parameters``).
        permuted: Those with at least one axis in some group.
        unpermuted: Keys of learnable tensors no group touches (by architecture, such as the
            first layer's input axis and the logits' output axis, these still appear as
            *permuted* because their other axis is a member).
        frozen: Frozen groups (discovered specs): name -> why they are left unpermuted.
        frozen_units: Units in frozen groups.
        opaque: Modules no symmetry rule knows: qualified name -> class (their parameters
            stay unpermuted).
    """

    groups: int
    units: int
    parameters: int
    permuted: int
    unpermuted: tuple[str, ...]
    frozen: dict[str, str]
    frozen_units: int
    opaque: dict[str, str]

    @property
    def empty(self) -> bool:
        """Whether the spec permutes nothing."""
        return self.groups == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        lines = [
            f"coverage: {self.groups} groups, {self.units} units; "
            f"{self.permuted} of {self.parameters} parameter tensors permuted"
        ]
        if self.frozen:
            lines.append(f"frozen groups ({self.frozen_units} units left unpermuted):")
            lines.extend(f"  {name}: {why}" for name, why in self.frozen.items())
        if self.opaque:
            by_cls: dict[str, list[str]] = {}
            for name, cls in self.opaque.items():
                by_cls.setdefault(cls, []).append(name)
            for cls, names in by_cls.items():
                lines.append(
                    f"no symmetry rule for {cls} ({_join(names, 4)}): its parameters stay "
                    "unpermuted"
                )
        if self.unpermuted:
            lines.append(f"parameters left unpermuted: {_join(self.unpermuted, 8)}")
        return "\n".join(lines)


def coverage(spec: PermutationSpec, model: torch.nn.Module | Mapping[str, Any]) -> Coverage:
    """Summarise what ``spec`` permutes in ``model`` (a module, or a mapping of its learnable
    parameters by name), with the reason for every frozen group recorded at discovery."""
    if isinstance(model, torch.nn.Module):
        keys = [k for k, _ in model.named_parameters()]
    else:
        keys = list(model)
    touched = spec.state_keys()
    frozen = {str(k): str(v) for k, v in dict(spec.meta.get("frozen", {})).items()}
    sizes = dict(spec.meta.get("frozen_sizes", {}))
    return Coverage(
        groups=len(spec.groups),
        units=sum(g.size for g in spec.groups.values()),
        parameters=len(keys),
        permuted=sum(1 for k in keys if k in touched),
        unpermuted=tuple(k for k in keys if k not in touched),
        frozen=frozen,
        frozen_units=int(sum(int(sizes.get(k, 0)) for k in frozen)),
        opaque={str(k): str(v) for k, v in dict(spec.meta.get("opaque_modules", {})).items()},
    )
