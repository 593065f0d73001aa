"""Metrics of a path: the numbers of Tatro et al. (2020), Tables 1-3, and loss barriers.

For a series :math:`v(t_0), \\dots, v(t_{m-1})` along a path (loss, or accuracy in %):

- *endpoint*: :math:`\\tfrac12\\big(v(t_0) + v(t_{m-1})\\big)`;
- *min* / *max* over the points;
- *mean*: the plain mean over the points;
- *arc-length mean* (the paper's "Avg."): trapezoid rule with weights proportional to the
  parameter-space distance :math:`d_i = \\lVert\\varphi(t_{i+1}) - \\varphi(t_i)\\rVert`,
  :math:`\\sum_i \\tfrac{v_i + v_{i+1}}{2}\\,\\tfrac{d_i}{\\sum_j d_j}`;
- *barrier* (Frankle et al. 2020 form): :math:`\\max_t\\, L(t) - [(1-s)L(t_0) + sL(t_{m-1})]`
  with :math:`s = (t - t_0)/(t_{m-1} - t_0)`, for the loss and for the error
  :math:`100 - \\mathrm{acc}`;
- *Ainsworth barrier* (Ainsworth et al. 2023, "Git Re-Basin"):
  :math:`\\max_t L(t) - \\tfrac12\\big(L(t_0) + L(t_{m-1})\\big)`.

Robust evaluation (:func:`neuralign.paths.evaluate_path_robust`) adds the series
``robust_loss`` / ``robust_acc`` (test loss/accuracy under a PGD attack at every ``t``); the
barriers of ``robust_loss`` are the *robust loss barrier* of Zhao et al. (2020), "Bridging
Mode Connectivity in Loss Landscapes and Adversarial Robustness".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neuralign.errors import ConfigError
from neuralign.io.atomic import atomic_write_text

__all__ = ["BN_MODES", "METRICS", "PathResult", "read_json_file"]

BN_MODES = ("train-subset", "train-full-augmented", "none")
METRICS = ("test_loss", "test_acc", "train_loss", "train_acc", "robust_loss", "robust_acc")


def _is_acc(metric: str) -> bool:
    return metric.endswith("_acc")


_NAN = float("nan")


def _has_nan(values: list[float]) -> bool:
    return any(math.isnan(v) for v in values)


def _max(values: list[float]) -> float:
    """``max`` that is NaN when any value is (Python's ``max`` skips NaNs by position)."""
    return _NAN if _has_nan(values) else max(values)


def _min(values: list[float]) -> float:
    """``min`` that is NaN when any value is."""
    return _NAN if _has_nan(values) else min(values)


@dataclass
class PathResult:
    """Loss and accuracy along a path, with every summary metric of the paper.

    Attributes:
        ts: The evaluated points in ``[0, 1]``, increasing.
        test_loss: Mean cross-entropy on the test data at each ``t``.
        test_acc: Test accuracy in % at each ``t``.
        train_loss: Train loss at each ``t`` (``None`` when not measured).
        train_acc: Train accuracy in % at each ``t`` (``None`` when not measured).
        distances: Parameter-space distances between consecutive points (``len(ts) - 1``);
            empty when unknown (the arc-length mean then weights by ``t`` intervals).
        bn_mode: Which data recomputed BatchNorm statistics (``"train-subset"``,
            ``"train-full-augmented"``, or ``"none"``).
        metadata: Free-form JSON-serialisable metadata (curve family, pair, seeds, ...).
        robust_loss: Test loss under attack at each ``t`` (``None`` unless robust).
        robust_acc: Test accuracy under attack in % at each ``t`` (``None`` unless robust).
        bn_source: For robust evaluations, whether BatchNorm statistics were recomputed on
            ``"clean"`` or ``"adversarial"`` training inputs (``None`` otherwise).
    """

    ts: list[float]
    test_loss: list[float]
    test_acc: list[float]
    train_loss: list[float] | None = None
    train_acc: list[float] | None = None
    distances: list[float] = field(default_factory=list)
    bn_mode: str = "train-subset"
    metadata: dict[str, Any] = field(default_factory=dict)
    robust_loss: list[float] | None = None
    robust_acc: list[float] | None = None
    bn_source: str | None = None

    def __post_init__(self) -> None:
        m = len(self.ts)
        for name in METRICS:
            values = getattr(self, name)
            if values is not None and len(values) not in (0, m):
                raise ConfigError(f"PathResult.{name} has {len(values)} values for {m} ts")

    # ------------------------------------------------------------------ series

    @property
    def finite(self) -> bool:
        """Whether every value of every series (and every distance) is finite.

        A path with a NaN or infinite point (a diverged curve) has non-finite summary
        metrics: every metric over such a series is NaN (or infinite), never a number
        computed from the finite remainder (docs/reliability.md, "Divergence").
        """
        return not self.non_finite()

    def non_finite(self) -> dict[str, list[float]]:
        """``{series: [t, ...]}``: where each series is NaN or infinite (empty: all finite)."""
        out: dict[str, list[float]] = {}
        for name in self.metrics():
            bad = [t for t, v in zip(self.ts, getattr(self, name)) if not math.isfinite(v)]
            if bad:
                out[name] = bad
        if any(not math.isfinite(d) for d in self.distances):
            out["distances"] = [t for t, d in zip(self.ts, self.distances) if not math.isfinite(d)]
        return out

    def metrics(self) -> list[str]:
        """Names of the series present (``test_loss``, ``test_acc``, maybe ``train_*``)."""
        return [name for name in METRICS if getattr(self, name)]

    def series(self, metric: str) -> list[float]:
        """The values of ``metric`` along the path."""
        if metric not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
        values = getattr(self, metric)
        if not values:
            raise ConfigError(f"this PathResult has no {metric!r} series")
        return list(values)

    def _loss_like(self, metric: str) -> list[float]:
        """The series as a quantity to minimise: loss, or error = 100 - accuracy."""
        values = self.series(metric)
        return [100.0 - v for v in values] if _is_acc(metric) else values

    # ------------------------------------------------------------------ metrics

    def endpoint(self, metric: str) -> float:
        """Mean of the first and last points (``t = 0`` and ``t = 1``)."""
        v = self.series(metric)
        return 0.5 * (v[0] + v[-1])

    def min(self, metric: str) -> float:
        """Minimum over the path (NaN if any point is NaN)."""
        return _min(self.series(metric))

    def max(self, metric: str) -> float:
        """Maximum over the path (NaN if any point is NaN)."""
        return _max(self.series(metric))

    def mean(self, metric: str) -> float:
        """Plain mean over the evaluated points."""
        v = self.series(metric)
        return sum(v) / len(v)

    def weights(self) -> list[float]:
        """Normalised interval weights of the arc-length trapezoid rule (sum to one).

        Proportional to :attr:`distances`; when those are missing or all zero, to the
        ``t`` intervals. A non-finite distance (a diverged curve) makes every weight NaN.
        """
        m = len(self.ts)
        if m < 2:
            return []
        d = list(self.distances)
        if len(d) == m - 1 and any(not math.isfinite(x) for x in d):
            return [_NAN] * (m - 1)
        if len(d) != m - 1 or not sum(d) > 0:
            d = [b - a for a, b in zip(self.ts, self.ts[1:])]
            if not sum(d) > 0:
                d = [1.0] * (m - 1)
        total = sum(d)
        return [x / total for x in d]

    def arc_mean(self, metric: str) -> float:
        """Arc-length weighted mean: :math:`\\sum_i \\frac{v_i + v_{i+1}}{2} w_i`."""
        v = self.series(metric)
        if len(v) == 1:
            return v[0]
        return sum(0.5 * (a + b) * w for a, b, w in zip(v, v[1:], self.weights()))

    def barrier(self, metric: str) -> float:
        """:math:`\\max_t L(t) - [(1-s)L(0) + sL(1)]`; for an accuracy, ``L`` is the error."""
        v = self._loss_like(metric)
        t0, t1 = self.ts[0], self.ts[-1]
        if _has_nan(v):
            return _NAN
        if len(v) == 1 or t1 == t0:
            return 0.0
        return _max(
            [
                val - ((1.0 - (t - t0) / (t1 - t0)) * v[0] + (t - t0) / (t1 - t0) * v[-1])
                for t, val in zip(self.ts, v)
            ]
        )

    def barrier_ainsworth(self, metric: str) -> float:
        """:math:`\\max_t L(t) - \\tfrac12(L(0) + L(1))`; for an accuracy, ``L`` is the error."""
        v = self._loss_like(metric)
        return _max(v) - 0.5 * (v[0] + v[-1])

    # ------------------------------------------------------------------ shortcuts

    @property
    def endpoint_accuracy(self) -> float:
        """Mean test accuracy of the two endpoints (%)."""
        return self.endpoint("test_acc")

    @property
    def endpoint_loss(self) -> float:
        """Mean test loss of the two endpoints."""
        return self.endpoint("test_loss")

    @property
    def min_accuracy(self) -> float:
        """Lowest test accuracy along the path (%)."""
        return self.min("test_acc")

    @property
    def max_loss(self) -> float:
        """Highest test loss along the path."""
        return self.max("test_loss")

    @property
    def avg_accuracy(self) -> float:
        """Arc-length weighted mean test accuracy (%): the paper's "Avg."."""
        return self.arc_mean("test_acc")

    @property
    def avg_loss(self) -> float:
        """Arc-length weighted mean test loss."""
        return self.arc_mean("test_loss")

    @property
    def loss_barrier(self) -> float:
        """Test-loss barrier above the linear interpolation of the endpoints."""
        return self.barrier("test_loss")

    @property
    def error_barrier(self) -> float:
        """Test-error barrier (percentage points) above the linear interpolation."""
        return self.barrier("test_acc")

    def summary(self) -> dict[str, float]:
        """Every metric of every series present, flat.

        Keys ``{metric}_{endpoint,min,max,mean,arc_mean}`` for each series, and
        ``{split}_loss_barrier``, ``{split}_loss_barrier_ainsworth``,
        ``{split}_error_barrier``, ``{split}_error_barrier_ainsworth``.
        """
        out: dict[str, float] = {}
        for metric in self.metrics():
            out[f"{metric}_endpoint"] = self.endpoint(metric)
            out[f"{metric}_min"] = self.min(metric)
            out[f"{metric}_max"] = self.max(metric)
            out[f"{metric}_mean"] = self.mean(metric)
            out[f"{metric}_arc_mean"] = self.arc_mean(metric)
            name = metric.replace("_acc", "_error")
            out[f"{name}_barrier"] = self.barrier(metric)
            out[f"{name}_barrier_ainsworth"] = self.barrier_ainsworth(metric)
        if self.robust_acc and self.test_acc:
            out.update(self.robust_extremes())
        return out

    # ------------------------------------------------------------------ robustness

    def robust_extremes(self) -> dict[str, float]:
        """Where the robust accuracy is lowest and highest, and the clean accuracy there.

        Keys ``robust_acc_{min,max}_t`` and ``clean_acc_at_robust_{min,max}`` (the pairs
        Tatro et al. 2020 report in §5; the values themselves are ``robust_acc_{min,max}``
        of :meth:`summary`).
        """
        rob = self.series("robust_acc")
        clean = self.series("test_acc")
        if _has_nan(rob):
            return {
                "robust_acc_min_t": _NAN,
                "clean_acc_at_robust_min": _NAN,
                "robust_acc_max_t": _NAN,
                "clean_acc_at_robust_max": _NAN,
            }
        i_min = min(range(len(rob)), key=rob.__getitem__)
        i_max = max(range(len(rob)), key=rob.__getitem__)
        return {
            "robust_acc_min_t": self.ts[i_min],
            "clean_acc_at_robust_min": clean[i_min],
            "robust_acc_max_t": self.ts[i_max],
            "clean_acc_at_robust_max": clean[i_max],
        }

    @property
    def robust_loss_barrier(self) -> float:
        """Robust (PGD) test-loss barrier above the linear interpolation (Zhao et al. 2020)."""
        return self.barrier("robust_loss")

    @property
    def avg_robust_loss(self) -> float:
        """Arc-length weighted mean robust test loss along the path."""
        return self.arc_mean("robust_loss")

    @property
    def min_robust_accuracy(self) -> float:
        """Lowest robust test accuracy along the path (%)."""
        return self.min("robust_acc")

    @property
    def endpoint_robust_accuracy(self) -> float:
        """Mean robust test accuracy of the two endpoints (%)."""
        return self.endpoint("robust_acc")

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (with the summary, for readers of the JSON)."""
        d = asdict(self)
        d["summary"] = self.summary()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PathResult:
        """Inverse of :meth:`to_dict` (the stored summary is recomputed, not trusted)."""
        if not isinstance(d, dict):
            raise TypeError(f"expected a JSON object, got {type(d).__name__}")
        fields = {k: v for k, v in d.items() if k != "summary"}
        return cls(**fields)

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> PathResult:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON atomically and return the path."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PathResult:
        """Read a file written by :meth:`save`.

        Raises:
            CheckpointError: missing, special, unreadable or malformed file.
        """
        return read_json_file(path, "PathResult JSON file", cls.from_json)


def read_json_file(path: str | os.PathLike[str], what: str, parse: Any) -> Any:
    """``parse(text)`` of a result file, every failure a :class:`CheckpointError` naming it.

    The file must be a regular file (not a FIFO or device: docs/reliability.md) of at most
    256 MiB; a parser error of any kind (bad JSON, wrong structure, wrong field types) is
    reported as a corrupt file.
    """
    from neuralign.errors import CheckpointError
    from neuralign.io.files import regular_file

    p = regular_file(path, what, CheckpointError, max_bytes=256 << 20)
    try:
        result = parse(p.read_text(encoding="utf-8"))
        if dataclasses.is_dataclass(result):
            _check_field_types(result)
        return result
    except CheckpointError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        RecursionError,
        UnicodeDecodeError,
    ) as exc:
        raise CheckpointError(
            f"{p}: not a {what} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "re-create it"
        ) from None


def _check_field_types(obj: Any) -> None:
    """Raise TypeError when a loaded result's list/dict/number fields have another type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, tp = getattr(obj, f.name), hints.get(f.name)
        origin = typing.get_origin(tp)
        if origin is list and not isinstance(value, list):
            raise TypeError(f"{f.name}: expected a list, got {type(value).__name__}")
        if origin is dict and not isinstance(value, dict):
            raise TypeError(f"{f.name}: expected an object, got {type(value).__name__}")
        if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{f.name}: expected an integer, got {type(value).__name__}")
        if tp is str and not isinstance(value, str):
            raise TypeError(f"{f.name}: expected a string, got {type(value).__name__}")
