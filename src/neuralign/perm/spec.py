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

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from neuralign.io.atomic import atomic_write_text
from neuralign.perm import speccheck
from neuralign.perm.specdata import AxisMember, Group, SpecError, Tap
from neuralign.perm.specjson import spec_from_dict, spec_to_dict
from neuralign.perm.specreport import Coverage, coverage, format_spec_table

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


#: A spec file is read whole: refuse one larger than any real network's spec.
MAX_JSON_BYTES = 256 << 20


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
        speccheck.validate_spec(self, state_dict)

    def check_structure(self) -> None:
        """Check block structures: ``blocks`` divides ``size``; linked groups agree on the
        number of blocks; a block-diagonal member (grouped convolution input,
        ``row_blocks > 1``) belongs to a group of ``row_blocks`` blocks linked to the group
        that holds axis 0 of the same tensor (their block permutations must be equal).

        Raises:
            SpecError: Naming the group.
        """
        speccheck.check_structure(self)

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
        return spec_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PermutationSpec:
        """Inverse of :meth:`to_dict`.

        Raises:
            SpecError: If ``data`` is not a permutation spec of a known version.
        """
        return spec_from_dict(cls, data)

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
