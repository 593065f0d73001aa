"""Several points in one vmapped pass: the same statistics and metrics as one by one."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from nets_testlib import MLPBN, Batches, ConvBN, make_pair
from neuralign.curves import Bezier
from neuralign.paths import evaluate_path, evaluate_plane, evaluate_state, recompute_bn
from neuralign.paths.multipoint import (
    evaluate_states,
    points_per_pass,
    recompute_bn_many,
    stack_states,
)


def _data(n: int = 90, batch: int = 32, seed: int = 0) -> Batches:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen) * 2.0 + 0.5
    y = torch.randint(0, 10, (n,), generator=gen)
    return Batches(x, y, batch)


def _states(cls: type[nn.Module], k: int) -> tuple[nn.Module, list[dict[str, Tensor]]]:
    a, b = make_pair(cls)
    curve = Bezier(a, b)
    with torch.no_grad():
        for p in curve.control_parameters():
            p.add_(0.3 * torch.randn_like(p))
        states = [
            {n: v.detach().clone() for n, v in curve.state_at(t).items()}
            for t in torch.linspace(0.1, 0.9, k).tolist()
        ]
    return curve.model, states


@pytest.mark.parametrize("cls", [ConvBN, MLPBN])
def test_recompute_bn_many_equals_one_by_one(cls: type[nn.Module]) -> None:
    model, states = _states(cls, 3)
    bn = _data(100, 27, seed=1)  # unequal last batch
    many = recompute_bn_many(model, states, bn)
    for state, got in zip(states, many, strict=True):
        ref = recompute_bn(model, state, bn)
        assert set(got) == set(ref)
        for k in ref:
            if k.endswith("num_batches_tracked"):
                assert int(got[k]) == int(ref[k]) == 4
            else:
                assert got[k].dtype == ref[k].dtype
                torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)
        for k in state:  # parameters pass through untouched
            if "running" not in k and "num_batches" not in k:
                assert got[k] is state[k]


def test_evaluate_states_equals_evaluate_state() -> None:
    model, states = _states(MLPBN, 4)  # MLPBN has a non-persistent buffer
    test = _data(70, 16, seed=2)
    many = evaluate_states(model, states, test)
    for state, (loss, acc) in zip(states, many, strict=True):
        ref_loss, ref_acc = evaluate_state(model, state, test)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert acc == pytest.approx(ref_acc)


def test_evaluate_path_batched_equals_one_point_path() -> None:
    a, b = make_pair(ConvBN)
    curve = Bezier(a, b)
    with torch.no_grad():
        for p in curve.control_parameters():
            p.add_(0.5 * torch.randn_like(p))
    kw = {"ts": 7, "bn_data": _data(64, 20, seed=3), "progress": False}
    one = evaluate_path(curve, _data(), points_per_pass=1, train_data=_data(seed=4), **kw)
    # 3 per pass: chunks of 3, 3 and a last one of 1
    many = evaluate_path(curve, _data(), points_per_pass=3, train_data=_data(seed=4), **kw)
    assert many.ts == one.ts and many.distances == one.distances
    for name in ("test_loss", "test_acc", "train_loss", "train_acc"):
        assert getattr(many, name) == pytest.approx(getattr(one, name), rel=1e-5), name


def test_evaluate_plane_batched_equals_one_point() -> None:
    a, b = make_pair(ConvBN)
    curve = Bezier(a, b)
    with torch.no_grad():
        for p in curve.control_parameters():
            p.add_(0.5 * torch.randn_like(p))
    kw = {"grid": (3, 3), "bn_data": _data(64, 32, seed=3), "curve_ts": 5, "progress": False}
    one = evaluate_plane(curve, _data(), points_per_pass=1, **kw)
    many = evaluate_plane(curve, _data(), points_per_pass=4, **kw)
    for row_one, row_many in zip(one.test_loss, many.test_loss, strict=True):
        assert row_many == pytest.approx(row_one, rel=1e-5)
    assert many.test_acc == one.test_acc


def test_policy_and_fallbacks() -> None:
    model = ConvBN()
    assert points_per_pass(model, "cpu") == 1
    assert points_per_pass(model, "cuda") == 8
    big = nn.Linear(2000, 1001)  # > 2M parameters
    assert points_per_pass(big, "cuda") == 1

    class OddBN(nn.BatchNorm2d):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x)

    odd = ConvBN()
    odd.bn = OddBN(8)
    with pytest.raises(ValueError, match="stock"):
        recompute_bn_many(odd, [odd.state_dict()], _data())
    with pytest.raises(ValueError):
        stack_states([])


def test_batched_failure_falls_back_to_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import neuralign.paths.evaluate as ev

    a, b = make_pair(ConvBN)
    curve = Bezier(a, b)
    kw = {"ts": 3, "bn_data": _data(64, 32, seed=3), "progress": False}
    one = evaluate_path(curve, _data(), points_per_pass=1, **kw)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no batching rule")

    monkeypatch.setattr(ev, "evaluate_states", broken)
    with pytest.warns(RuntimeWarning, match="one by one"):
        many = evaluate_path(curve, _data(), points_per_pass=3, train_data=_data(seed=4), **kw)
    assert many.test_loss == one.test_loss and many.train_loss is not None
