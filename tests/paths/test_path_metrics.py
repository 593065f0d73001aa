"""PathResult metrics against hand-computed values; aggregation; JSON round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from neuralign.errors import ConfigError
from neuralign.paths import PathResult, aggregate

# A hand-made path. Loss L = [1, 4, 2, 2, 0.5]; accuracy [90, 80, 60, 70, 94] so the error is
# E = [10, 20, 40, 30, 6]; distances between consecutive points d = [1, 1, 2, 4] (sum 8).
TS = [0.0, 0.25, 0.5, 0.75, 1.0]
LOSS = [1.0, 4.0, 2.0, 2.0, 0.5]
ACC = [90.0, 80.0, 60.0, 70.0, 94.0]
DIST = [1.0, 1.0, 2.0, 4.0]


def _result(**kw: object) -> PathResult:
    args: dict[str, object] = dict(ts=TS, test_loss=LOSS, test_acc=ACC, distances=DIST)
    args.update(kw)
    return PathResult(**args)  # type: ignore[arg-type]


def test_hand_computed_metrics() -> None:
    r = _result()
    # endpoint: (1 + 0.5) / 2 and (90 + 94) / 2
    assert r.endpoint_loss == 0.75
    assert r.endpoint_accuracy == 92.0
    assert r.max_loss == 4.0
    assert r.min_accuracy == 60.0
    # plain means: 9.5 / 5 and 394 / 5
    assert r.mean("test_loss") == pytest.approx(1.9)
    assert r.mean("test_acc") == pytest.approx(78.8)
    # arc length: interval means 2.5, 3, 2, 1.25 with weights 1/8, 1/8, 2/8, 4/8 -> 14.5 / 8
    assert r.avg_loss == pytest.approx(1.8125)
    # accuracy interval means 85, 70, 65, 82 -> (85 + 70 + 130 + 328) / 8 = 613 / 8
    assert r.avg_accuracy == pytest.approx(76.625)
    # loss barrier: L - (1 - 0.5 t) = [0, 3.125, 1.25, 1.375, 0] -> 3.125
    assert r.loss_barrier == pytest.approx(3.125)
    # Ainsworth: max L - (L0 + L1) / 2 = 4 - 0.75
    assert r.barrier_ainsworth("test_loss") == pytest.approx(3.25)
    # error barrier: E - (10 - 4 t) = [0, 11, 32, 23, 0] -> 32; Ainsworth 40 - 8 = 32
    assert r.error_barrier == pytest.approx(32.0)
    assert r.barrier_ainsworth("test_acc") == pytest.approx(32.0)
    s = r.summary()
    assert s["test_loss_arc_mean"] == pytest.approx(1.8125)
    assert s["test_error_barrier"] == pytest.approx(32.0)
    assert s["test_loss_barrier_ainsworth"] == pytest.approx(3.25)
    assert s["test_acc_min"] == 60.0 and s["test_loss_max"] == 4.0
    assert not any(k.startswith("train_") for k in s)


def test_arc_mean_falls_back_to_t_intervals_and_train_series() -> None:
    r = _result(distances=[], train_loss=[0.0, 1.0, 2.0, 1.0, 0.0], train_acc=[100.0] * 5)
    # trapezoid in t with equal steps: (0.5 + 1.5 + 1.5 + 0.5) / 4 = 1.0
    assert r.arc_mean("train_loss") == pytest.approx(1.0)
    assert r.summary()["train_loss_barrier"] == pytest.approx(2.0)
    assert r.summary()["train_error_barrier"] == pytest.approx(0.0)
    with pytest.raises(ConfigError):
        _result().series("train_loss")
    with pytest.raises(ConfigError):
        _result(test_loss=[1.0, 2.0])


def test_json_round_trip(tmp_path: Path) -> None:
    r = _result(metadata={"pair": [0, 1]}, bn_mode="train-full-augmented")
    again = PathResult.from_json(r.to_json())
    assert again == r
    path = r.save(tmp_path / "deep" / "path.json")
    assert PathResult.load(path) == r
    assert '"summary"' in path.read_text()


def test_aggregate_mean_and_std() -> None:
    r1 = _result()
    r2 = _result(test_loss=[v + 1.0 for v in LOSS], test_acc=[v - 2.0 for v in ACC])
    agg = aggregate([r1, r2])
    assert agg.n == 2 and agg.ts == TS
    assert agg.mean["test_loss"] == pytest.approx([v + 0.5 for v in LOSS])
    # sample std of {v, v + 1} is 1 / sqrt(2)
    assert agg.std["test_loss"] == pytest.approx([1 / math.sqrt(2)] * 5)
    assert agg.mean["test_acc"] == pytest.approx([v - 1.0 for v in ACC])
    assert agg.summary_mean["test_loss_max"] == pytest.approx(4.5)
    assert agg.summary_std["test_acc_min"] == pytest.approx(math.sqrt(2))
    assert agg.summary_std["test_loss_barrier"] == pytest.approx(0.0, abs=1e-12)
    assert type(agg).from_json(agg.to_json()) == agg
    single = aggregate([r1])
    assert single.std["test_loss"] == [0.0] * 5
    with pytest.raises(ConfigError, match="different ts"):
        aggregate([r1, _result(ts=[0.0, 0.2, 0.5, 0.75, 1.0])])
    with pytest.raises(ConfigError, match="BN modes"):
        aggregate([r1, _result(bn_mode="none")])
    with pytest.raises(ConfigError):
        aggregate([])
