"""Validated ranges of configuration fields, declared once next to each dataclass field.

A numeric field of a config dataclass is declared with :func:`ranged`, which stores a
:class:`Range` in the field's metadata. The dataclass's ``validate`` checks every ranged
field with :func:`check_ranges`, and the CLI builds each option's ``click`` type from the
same :class:`Range` (``neuralign.cli.options.option_type``), so a range exists in one
place. Upper bounds are set where memory or time grows with the value (points, bends,
grid, seeds, epochs, batch sizes, PGD steps) so that a typo such as ``points = 10**9``
is refused at once instead of running out of memory (docs/reliability.md, "Ranges").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from neuralign.errors import ConfigError

__all__ = [
    "MAX_BATCH",
    "MAX_BENDS",
    "MAX_EPOCHS",
    "MAX_IMAGES",
    "MAX_SEED",
    "Range",
    "check_args",
    "check_ranges",
    "field_range",
    "ranged",
]

#: Upper bound of image counts (subset sizes): larger than any dataset neuralign reads.
MAX_IMAGES = 10**9
#: Upper bound of epoch counts and decay periods (time grows linearly with them).
MAX_EPOCHS = 100_000
#: Upper bound of batch sizes (memory grows linearly).
MAX_BATCH = 1 << 20
#: Upper bound of a curve's control points (one network copy per bend).
MAX_BENDS = 64
#: Largest seed (NumPy's and Python's generators take seeds below 2**32).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval ``[lo, hi]`` of an int or float field.

    For a list or tuple field the interval applies to every item, and ``max_items`` (and
    ``min_items``) bound its length.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    min_items: int = 0
    max_items: int | None = None

    def describe(self) -> str:
        """The interval in words, e.g. ``in [2, 1001]`` or ``> 0``."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return f"in {'(' if self.lo_open else '['}{_num(lo)}, {_num(hi)}{')' if self.hi_open else ']'}"
        if lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(lo)}"
        if hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(hi)}"
        return "a finite number"

    def contains(self, value: Any) -> bool:
        """Whether the number ``value`` lies in the interval (NaN never does)."""
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            return False
        if math.isnan(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def check(self, value: Any, name: str) -> None:
        """Raise :class:`ConfigError` ``"NAME: must be in [lo, hi], got VALUE"`` if outside."""
        if isinstance(value, (list, tuple)):
            n = len(value)
            if n < self.min_items or (self.max_items is not None and n > self.max_items):
                most = "" if self.max_items is None else f" and at most {self.max_items}"
                raise ConfigError(
                    f"{name}: must hold at least {self.min_items}{most} items, got {n}"
                )
            for i, item in enumerate(value):
                self.check(item, f"{name}[{i}]")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return  # types are checked by the config loader / the dataclass's consumer
        if not self.contains(value):
            raise ConfigError(f"{name}: must be {self.describe()}, got {value!r}")


def _num(x: float) -> str:
    if float(x).is_integer() and abs(x) >= 10**6:
        e = int(round(math.log10(abs(x))))
        if 10**e == abs(x):
            return f"1e{e}"
    return f"{x:g}" if isinstance(x, float) else str(x)


def ranged(
    default: Any = dataclasses.MISSING,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    min_items: int = 0,
    max_items: int | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with a validated :class:`Range` in its metadata."""
    rng = Range(lo, hi, lo_open, hi_open, min_items, max_items)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"range": rng})
    return dataclasses.field(default=default, metadata={"range": rng})


def field_range(cls: Any, name: str) -> Range | None:
    """The :class:`Range` declared for field ``name`` of dataclass ``cls`` (None if none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            rng = f.metadata.get("range")
            return rng if isinstance(rng, Range) else None
    raise KeyError(f"{getattr(cls, '__name__', cls)} has no field {name!r}")


def check_args(ranges: dict[str, Range], **values: Any) -> None:
    """Check a library function's arguments against its declared ``ranges`` (by name)."""
    for name, value in values.items():
        ranges[name].check(value, name)


def check_ranges(obj: Any, where: str = "") -> None:
    """Check every ranged field of the dataclass instance ``obj``; raise naming the first bad one.

    Args:
        obj: A dataclass instance.
        where: Prefix of the field names in messages (``"curves"`` gives ``curves.bends``).
    """
    for f in dataclasses.fields(obj):
        rng = f.metadata.get("range")
        if isinstance(rng, Range):
            rng.check(getattr(obj, f.name), f"{where}.{f.name}" if where else f.name)
