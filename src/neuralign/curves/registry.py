"""The registry of curve families: every :class:`~neuralign.curves.base.Curve` subclass that
sets ``family`` registers itself here (see docs/architecture.md, "a curve family")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralign.errors import ConfigError

if TYPE_CHECKING:
    from neuralign.curves.base import Curve

#: family name -> Curve subclass (filled by ``Curve.__init_subclass__``).
REGISTRY: dict[str, type[Curve]] = {}


def curve_families() -> tuple[str, ...]:
    """Names of the registered curve families (every imported :class:`Curve` subclass that
    sets ``family``), e.g. ``("bezier", "polychain", "line")``."""
    return tuple(REGISTRY)


def curve_family(name: str) -> type[Curve]:
    """The :class:`Curve` subclass registered as ``name``.

    Raises:
        ConfigError: For an unknown family.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown curve family {name!r}; choose from {', '.join(curve_families())}"
        ) from None
