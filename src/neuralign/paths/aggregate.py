"""Mean ± standard deviation over several evaluated paths (e.g. over pairs of networks)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuralign.errors import ConfigError
from neuralign.io.atomic import atomic_write_text
from neuralign.paths.metrics import METRICS, PathResult, read_json_file


@dataclass
class AggregatedPath:
    """Mean and standard deviation over several paths (e.g. over pairs of networks).

    Attributes:
        ts: The common points.
        n: Number of paths aggregated.
        mean: Per-metric mean at each ``t``.
        std: Per-metric sample standard deviation (``ddof=1``; zero for one path) at each t.
        summary_mean: Mean over paths of each :meth:`PathResult.summary` entry.
        summary_std: Sample standard deviation of each summary entry.
        bn_mode: The common BN mode.
        metadata: The paths' metadata, in order.
    """

    ts: list[float]
    n: int
    mean: dict[str, list[float]]
    std: dict[str, list[float]]
    summary_mean: dict[str, float]
    summary_std: dict[str, float]
    bn_mode: str
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text."""
        return json.dumps(asdict(self), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> AggregatedPath:
        """Parse :meth:`to_json` output."""
        return cls(**json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically and return the path."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AggregatedPath:
        """Read a file written by :meth:`save` (a :class:`CheckpointError` if malformed)."""
        return read_json_file(path, "aggregated path JSON file", cls.from_json)


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mu = sum(values) / n
    if n < 2:
        return mu, 0.0
    return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1))


def aggregate(results: list[PathResult]) -> AggregatedPath:
    """Mean ± sample std over paths of every curve point and every summary metric.

    Args:
        results: Paths evaluated at the same ``ts`` with the same BN mode.

    Returns:
        An :class:`AggregatedPath`; series and summary entries present in every result.

    Raises:
        ConfigError: on an empty list, differing ``ts`` or differing BN modes.
    """
    if not results:
        raise ConfigError("aggregate needs at least one PathResult")
    ts = results[0].ts
    for r in results[1:]:
        if len(r.ts) != len(ts) or any(abs(a - b) > 1e-9 for a, b in zip(r.ts, ts)):
            raise ConfigError("aggregate: the paths were evaluated at different ts")
    modes = {r.bn_mode for r in results}
    if len(modes) > 1:
        raise ConfigError(f"aggregate: the paths use different BN modes {sorted(modes)}")
    common = [m for m in METRICS if all(m in r.metrics() for r in results)]
    mean: dict[str, list[float]] = {}
    std: dict[str, list[float]] = {}
    for metric in common:
        columns = [r.series(metric) for r in results]
        pairs = [_mean_std([col[i] for col in columns]) for i in range(len(ts))]
        mean[metric] = [p[0] for p in pairs]
        std[metric] = [p[1] for p in pairs]
    summaries = [r.summary() for r in results]
    keys = [k for k in summaries[0] if all(k in s for s in summaries)]
    summary_mean: dict[str, float] = {}
    summary_std: dict[str, float] = {}
    for k in keys:
        summary_mean[k], summary_std[k] = _mean_std([s[k] for s in summaries])
    return AggregatedPath(
        ts=list(ts),
        n=len(results),
        mean=mean,
        std=std,
        summary_mean=summary_mean,
        summary_std=summary_std,
        bn_mode=modes.pop(),
        metadata=[dict(r.metadata) for r in results],
    )
