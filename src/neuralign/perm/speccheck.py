"""Checks of a :class:`~neuralign.perm.spec.PermutationSpec`: block structure, and fit to a
state dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from neuralign.perm.specdata import SpecError

if TYPE_CHECKING:
    from neuralign.perm.spec import PermutationSpec


def validate_spec(spec: PermutationSpec, state_dict: Mapping[str, torch.Tensor]) -> None:
    """:meth:`PermutationSpec.validate <neuralign.perm.spec.PermutationSpec.validate>`: check
    that ``spec`` fits ``state_dict`` (raises :class:`SpecError`)."""
    claimed: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
    check_structure(spec)
    for g in spec.groups.values():
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


def check_structure(spec: PermutationSpec) -> None:
    """:meth:`PermutationSpec.check_structure
    <neuralign.perm.spec.PermutationSpec.check_structure>`: check block structures and links
    (raises :class:`SpecError`)."""
    links: dict[str, tuple[str, int]] = {}
    rows: dict[str, set[str]] = {}  # link -> keys whose axis 0 a linked group permutes
    for g in spec.groups.values():
        if g.blocks < 1 or g.size % g.blocks:
            raise SpecError(f"group {g.name!r}: {g.blocks} blocks do not divide its {g.size} units")
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
    for g in spec.groups.values():
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
