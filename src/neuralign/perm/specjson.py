"""JSON form of a :class:`~neuralign.perm.spec.PermutationSpec` (versioned, strictly typed
on reading)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from neuralign.perm.specdata import AxisMember, Group, SpecError, Tap

if TYPE_CHECKING:
    from neuralign.perm.spec import PermutationSpec


_FORMAT = "neuralign.permutation_spec"
_VERSION = 1


def spec_to_dict(spec: PermutationSpec) -> dict[str, Any]:
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
            for g in spec.groups.values()
        ],
        "meta": spec.meta,
    }


def spec_from_dict(cls: type[PermutationSpec], data: Mapping[str, Any]) -> PermutationSpec:
    """Inverse of :func:`spec_to_dict`; builds a ``cls``.

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
