"""evaluate_path: endpoints, BN handling, distances."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from nets_testlib import Batches, ConvBN, make_pair
from neuralign.curves import Bezier, Line, parameter_distance
from neuralign.errors import ConfigError
from neuralign.paths import evaluate_path, evaluate_state, recompute_bn, resolve_ts


def _data(n: int = 120, batch: int = 32, seed: int = 0) -> Batches:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return Batches(x, y, batch)


def test_endpoints_and_distances_on_a_line() -> None:
    a, b = make_pair(ConvBN)
    line = Line(a, b)
    test = _data()
    res = evaluate_path(line, test, ts=5, bn_mode="none", progress=False)
    assert res.ts == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert res.bn_mode == "none" and res.train_loss is None
    assert res.metadata["family"] == "line"
    for t, model in ((0, a), (-1, b)):
        loss, acc = evaluate_state(model, model.state_dict(), test)
        assert res.test_loss[t] == pytest.approx(loss, rel=1e-6)
        assert res.test_acc[t] == pytest.approx(acc)
    total = parameter_distance(a.state_dict(), b.state_dict(), line.interpolated_keys)
    assert sum(res.distances) == pytest.approx(total, rel=1e-5)
    assert res.distances == pytest.approx([total / 4] * 4, rel=1e-4)


def test_bn_recomputed_once_per_point_not_per_test_batch() -> None:
    a, b = make_pair(ConvBN)
    curve = Bezier(a, b)
    bn = _data(96, 32, seed=5)
    small = evaluate_path(curve, _data(batch=7), ts=3, bn_data=bn, progress=False)
    large = evaluate_path(curve, _data(batch=120), ts=3, bn_data=bn, progress=False)
    assert small.test_loss == pytest.approx(large.test_loss, rel=1e-5)
    assert small.bn_mode == "train-subset"
    # t = 0 equals endpoint A with its BN statistics recomputed on the same data
    state = recompute_bn(a, a.state_dict(), bn)
    loss, _ = evaluate_state(a, state, _data())
    assert small.test_loss[0] == pytest.approx(loss, rel=1e-6)
    # and differs from A with its own (random) statistics
    own, _ = evaluate_state(a, a.state_dict(), _data())
    assert abs(own - loss) > 1e-3


def test_train_series_modes_and_errors() -> None:
    a, b = make_pair(ConvBN)
    a.train()
    curve = Bezier(a, b)
    res = evaluate_path(
        curve,
        _data(),
        ts=[0.0, 0.5, 1.0],
        bn_data=_data(seed=2),
        bn_mode="train-full-augmented",
        train_data=_data(seed=3),
        progress=False,
        metadata={"pair": 3},
    )
    assert res.train_loss is not None and len(res.train_loss) == 3
    assert res.bn_mode == "train-full-augmented" and res.metadata["pair"] == 3
    assert a.training and curve.model.training  # modes left as they were
    with pytest.raises(ConfigError, match="bn_data"):
        evaluate_path(curve, _data(), ts=3, progress=False)
    with pytest.raises(ConfigError):
        evaluate_path(curve, _data(), ts=3, bn_mode="bogus", progress=False)
    with pytest.raises(ConfigError):
        resolve_ts(1)
    with pytest.raises(ConfigError):
        resolve_ts([0.5, 0.2])
    assert resolve_ts(3) == [0.0, 0.5, 1.0]


class _Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


def test_model_without_bn_needs_no_bn_data() -> None:
    torch.manual_seed(0)
    res = evaluate_path(Line(_Plain(), _Plain()), _data(), ts=3, progress=False)
    assert res.bn_mode == "none" and len(res.test_acc) == 3
