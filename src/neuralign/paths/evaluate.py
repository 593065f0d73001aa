"""Evaluate loss and accuracy along a path in weight space (Tatro et al. 2020, Sec. 5)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from neuralign import distributed as dist_
from neuralign.curves.base import functional_forward, parameter_distance
from neuralign.errors import ConfigError, DataError
from neuralign.models.common import split_logits
from neuralign.paths.bn import _reads_own_stats, batchnorm_modules, has_batchnorm, recompute_bn
from neuralign.paths.metrics import BN_MODES, PathResult
from neuralign.paths.multipoint import evaluate_states, recompute_bn_many
from neuralign.paths.multipoint import points_per_pass as points_per_pass_auto

__all__ = [
    "PathLike",
    "evaluate_path",
    "evaluate_points",
    "evaluate_state",
    "resolve_points_per_pass",
    "resolve_ts",
]


@runtime_checkable
class PathLike(Protocol):
    """Anything :func:`evaluate_path` can walk along (a :class:`~neuralign.curves.Curve`)."""

    model: nn.Module
    interpolated_keys: list[str]

    def state_at(self, t: float) -> dict[str, Tensor]:
        """The full state dict at ``t`` in ``[0, 1]``."""
        ...


def resolve_ts(ts: int | Sequence[float]) -> list[float]:
    """``int n`` → ``n`` equally spaced points of ``[0, 1]``; a sequence is checked and kept."""
    if isinstance(ts, numbers.Integral):
        count = int(ts)
        if count < 2:
            raise ConfigError(f"ts must be >= 2 points, got {count}")
        return [float(v) for v in torch.linspace(0.0, 1.0, count, dtype=torch.float64).tolist()]
    assert not isinstance(ts, int)
    values = [float(v) for v in ts]
    if len(values) < 1 or any(not 0.0 <= v <= 1.0 for v in values):
        raise ConfigError("ts must be a non-empty sequence of points in [0, 1]")
    if any(b < a for a, b in zip(values, values[1:])):
        raise ConfigError("ts must be sorted in increasing order")
    return values


def evaluate_state(
    model: nn.Module,
    state: dict[str, Tensor],
    data: Iterable[Any],
    *,
    device: str | torch.device | None = None,
    distributed: bool | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) of ``model`` at ``state`` on ``data``, eval mode.

    The sums are kept on the device (one host synchronisation at the end). In a distributed
    run (``distributed=None``: whenever a multi-process group is initialised) every rank
    must pass the same ``data``; each evaluates every ``world_size``-th batch and the loss
    sum, correct count and sample count are all-reduced, so every rank returns the
    single-process result (up to float64 summation order).

    Args:
        model: The architecture (its train/eval flags are restored afterwards).
        state: Full state dict.
        data: Iterable of ``(x, y)`` batches.
        device: Where to run; default: the device of the state's tensors.
        distributed: Shard and reduce across ranks (default: when distributed).

    Returns:
        ``(loss, accuracy)`` averaged over samples (not batches).
    """
    dev = torch.device(device) if device is not None else next(iter(state.values())).device
    shard = dist_.is_distributed() if distributed is None else distributed
    work = {k: v.to(dev) for k, v in state.items()}
    modes = {m: m.training for m in model.modules()}
    # loss sum, correct, count: float64 on the device (exact counts below 2**53)
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    try:
        model.eval()
        with torch.no_grad():
            for x, y in dist_.shard_batches(data) if shard else data:
                x, y = x.to(dev), y.to(dev)
                logits, _ = split_logits(functional_forward(model, work, x))
                sums[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
                sums[1] += (logits.argmax(1) == y).sum()
                sums[2] += y.shape[0]
    finally:
        for m, flag in modes.items():
            m.training = flag
    if shard:
        dist_.all_reduce_(sums)
    total_loss, correct, n = sums.tolist()
    if n == 0:
        raise DataError("evaluate_state: the data yielded no batch")
    if math.isnan(total_loss):
        # NaN logits (a diverged state) have no meaningful argmax: the accuracy is NaN too
        # (docs/reliability.md, "Divergence")
        return total_loss, float("nan")
    return total_loss / n, 100.0 * correct / n


def path_states(
    path: PathLike,
    points: Sequence[float],
    keys: Sequence[str],
    distances: list[float],
    device: str | torch.device | None,
    progress: bool,
    desc: str,
) -> Iterator[tuple[float, dict[str, Tensor]]]:
    """Yield ``(t, state_at(t))`` (detached, on ``device``) with a progress bar.

    Appends to ``distances`` the parameter-space distance (over ``keys``) between each
    point and the previous one, for the arc-length weighted averages.
    """
    previous: dict[str, Tensor] | None = None
    for t in tqdm(points, desc=desc, disable=not progress, unit="t"):
        with torch.no_grad():
            state = {k: v.detach() for k, v in path.state_at(t).items()}
        if device is not None:
            state = {k: v.to(device) for k, v in state.items()}
        if previous is not None:
            distances.append(parameter_distance(previous, state, keys))
        previous = {k: state[k] for k in keys}
        yield t, state


def evaluate_path(
    path: PathLike,
    data: Iterable[Any],
    *,
    ts: int | Sequence[float] = 65,
    bn_data: Iterable[Any] | None = None,
    bn_mode: str = "train-subset",
    bn_max_batches: int | None = None,
    train_data: Iterable[Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    points_per_pass: int | None = None,
) -> PathResult:
    """Loss and accuracy at points :math:`\\varphi(t)` of a path.

    At every ``t``: the state :math:`\\varphi(t)` is built; if the model has BatchNorm and
    ``bn_mode != "none"`` its running statistics are recomputed *once* on ``bn_data``
    (:func:`~neuralign.paths.recompute_bn`), then the test (and, with ``train_data``, train)
    loss and accuracy are measured in eval mode. The parameter-space distance between
    consecutive points (interpolated entries only) is recorded for the arc-length weighted
    average of Tatro et al. (2020), "Optimizing Mode Connectivity via Neuron Alignment".

    ``bn_mode`` names the BN data the caller passes and is recorded in the result:
    ``"train-subset"`` (a fixed, non-augmented, class-balanced training subset: cheap) or
    ``"train-full-augmented"`` (the full augmented training set: the reference's choice,
    one full pass per ``t``); ``"none"`` keeps the statistics of the state (endpoint A's).

    Args:
        path: A curve, or anything with ``state_at(t)``, ``model`` and ``interpolated_keys``.
        data: Test batches ``(x, y)``.
        ts: Number of equally spaced points in ``[0, 1]`` (paper: 65) or the points.
        bn_data: Batches for the BatchNorm statistics (required unless ``bn_mode="none"``
            or the model has no BatchNorm).
        bn_mode: ``"train-subset"``, ``"train-full-augmented"`` or ``"none"``.
        bn_max_batches: Use at most this many BN batches per point.
        train_data: Optional training batches to measure train loss/accuracy too.
        device: Where to run; default: where the path's tensors are.
        progress: Show a tqdm progress bar over ``t``.
        metadata: Extra metadata stored in the result (the curve family and bends are added).
        points_per_pass: Evaluate this many values of ``t`` together in one vmapped pass
            (:mod:`neuralign.paths.multipoint`; same results up to float rounding). Default:
            automatic (several on a GPU for a small model, one on a CPU).

    Returns:
        A :class:`~neuralign.paths.PathResult`.

    Raises:
        ConfigError: on an unknown ``bn_mode`` or missing ``bn_data``.
    """
    if bn_mode not in BN_MODES:
        raise ConfigError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    model = path.model
    use_bn = has_batchnorm(model) and bn_mode != "none"
    if use_bn and bn_data is None:
        raise ConfigError(
            f"the model has BatchNorm and bn_mode={bn_mode!r}: pass bn_data (training batches) "
            "or bn_mode='none'"
        )
    points = resolve_ts(ts)
    keys = list(path.interpolated_keys)
    result = PathResult(
        ts=points,
        test_loss=[],
        test_acc=[],
        train_loss=[] if train_data is not None else None,
        train_acc=[] if train_data is not None else None,
        distances=[],
        bn_mode=bn_mode if has_batchnorm(model) else "none",
        metadata=dict(metadata or {}),
    )
    for attr in ("family", "num_bends"):
        if hasattr(path, attr):
            result.metadata.setdefault(attr, getattr(path, attr))
    per_pass = resolve_points_per_pass(model, points_per_pass, device)
    chunk: list[dict[str, Tensor]] = []
    stream = path_states(path, points, keys, result.distances, device, progress, "path")
    for i, (_, state) in enumerate(stream):
        chunk.append(state)
        if len(chunk) < per_pass and i + 1 < len(points):
            continue
        test, train = evaluate_points(
            model, chunk, data, bn_data if use_bn else None, bn_max_batches, train_data
        )
        chunk = []
        for loss, acc in test:
            result.test_loss.append(loss)
            result.test_acc.append(acc)
        if train is not None:
            assert result.train_loss is not None and result.train_acc is not None
            for loss, acc in train:
                result.train_loss.append(loss)
                result.train_acc.append(acc)
    return result


def resolve_points_per_pass(
    model: nn.Module, points_per_pass: int | None, device: str | torch.device | None
) -> int:
    """``points_per_pass``, or the automatic choice (:func:`~neuralign.paths.points_per_pass`).

    Batched evaluation is single-process and needs stock BatchNorm layers: otherwise 1.
    """
    if points_per_pass is not None:
        if int(points_per_pass) < 1:
            raise ConfigError(f"points_per_pass must be >= 1, got {points_per_pass}")
        chosen = int(points_per_pass)
    else:
        chosen = points_per_pass_auto(model, device)
    if chosen > 1 and (
        dist_.is_distributed() or not all(_reads_own_stats(m) for _, m in batchnorm_modules(model))
    ):
        return 1
    return chosen


def evaluate_points(
    model: nn.Module,
    states: Sequence[dict[str, Tensor]],
    data: Iterable[Any],
    bn_data: Iterable[Any] | None,
    bn_max_batches: int | None,
    train_data: Iterable[Any] | None = None,
) -> tuple[list[tuple[float, float]], list[tuple[float, float]] | None]:
    """Test (and train) ``(loss, accuracy)`` of each state, BN recomputed when ``bn_data``.

    One state goes through :func:`~neuralign.paths.recompute_bn` and :func:`evaluate_state`;
    several go through one vmapped pass (:mod:`neuralign.paths.multipoint`), with the same
    statistics up to float rounding.
    """
    if len(states) == 1:
        state = states[0]
        if bn_data is not None:
            state = recompute_bn(model, state, bn_data, max_batches=bn_max_batches)
        test = [evaluate_state(model, state, data)]
        train = [evaluate_state(model, state, train_data)] if train_data is not None else None
        return test, train
    try:
        ready = list(states)
        if bn_data is not None:
            ready = recompute_bn_many(model, ready, bn_data, max_batches=bn_max_batches)
        test = evaluate_states(model, ready, data)
        train = evaluate_states(model, ready, train_data) if train_data is not None else None
    except (RuntimeError, NotImplementedError) as exc:
        # an op without a vmap rule (or a backend without batched kernels): same numbers,
        # one point at a time
        warnings.warn(
            f"evaluating {len(states)} points in one vmapped pass failed ({exc}); "
            "evaluating them one by one",
            RuntimeWarning,
            stacklevel=2,
        )
        test, train = [], [] if train_data is not None else None
        for state in states:
            one_test, one_train = evaluate_points(
                model, [state], data, bn_data, bn_max_batches, train_data
            )
            test += one_test
            if train is not None and one_train is not None:
                train += one_train
    return test, train
