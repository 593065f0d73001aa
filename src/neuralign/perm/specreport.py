"""Human-readable views of a spec: the group table and the coverage summary."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from neuralign.perm.spec import PermutationSpec


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
