"""Robust curves and robust path evaluation (clean + PGD series, robust loss barrier)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nets_testlib import MLPBN, Batches, ConvBN, load_digits_tensors, train_endpoint
from neuralign.attacks import PGD
from neuralign.curves import Bezier, Line, train_curve
from neuralign.errors import ConfigError
from neuralign.paths import PathResult, aggregate, evaluate_path_robust, plot_paths


@pytest.fixture(scope="module")
def digits() -> tuple[Batches, Batches, Batches]:
    xtr, ytr, xte, yte = load_digits_tensors()
    train = Batches(xtr[:512], ytr[:512], 64, shuffle=True)
    bn = Batches(xtr[:256], ytr[:256], 128)
    test = Batches(xte[:160], yte[:160], 80)
    return train, bn, test


@pytest.fixture(scope="module")
def pair(digits: tuple[Batches, Batches, Batches]) -> tuple[torch.nn.Module, torch.nn.Module]:
    train, _, _ = digits
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        out.append(train_endpoint(ConvBN(width=8), train, epochs=4, seed=seed, lr=0.1))
    return out[0], out[1]


def test_robust_path_series_and_metrics(
    digits: tuple[Batches, Batches, Batches], pair: tuple[torch.nn.Module, torch.nn.Module]
) -> None:
    _, bn, test = digits
    a, b = pair
    attack = PGD(eps=0.1, alpha=0.04, steps=3, random_start=False)
    res = evaluate_path_robust(
        Line(a, b), test, attack=attack, ts=5, bn_data=bn, bn_source="clean", progress=False
    )
    m = len(res.ts)
    assert m == 5
    for name in ("test_loss", "test_acc", "robust_loss", "robust_acc"):
        assert len(res.series(name)) == m
    assert len(res.distances) == m - 1
    assert res.bn_source == "clean" and res.metadata["attack"]["eps"] == 0.1
    # PGD without random start only climbs the loss.
    for clean, rob in zip(res.test_loss, res.robust_loss or []):
        assert rob >= clean - 1e-6
    s = res.summary()
    rl = res.series("robust_loss")
    expected_barrier = max(v - ((1 - t) * rl[0] + t * rl[-1]) for t, v in zip(res.ts, rl))
    assert s["robust_loss_barrier"] == pytest.approx(expected_barrier)
    assert res.robust_loss_barrier == pytest.approx(expected_barrier)
    assert s["robust_loss_barrier_ainsworth"] == pytest.approx(max(rl) - 0.5 * (rl[0] + rl[-1]))
    assert s["robust_loss_arc_mean"] == pytest.approx(res.avg_robust_loss)
    ra = res.series("robust_acc")
    i_min = ra.index(min(ra))
    assert s["robust_acc_min"] == min(ra) == res.min_robust_accuracy
    assert s["robust_acc_max"] == max(ra)
    assert s["clean_acc_at_robust_min"] == res.test_acc[i_min]
    assert s["robust_acc_min_t"] == res.ts[i_min]
    assert res.endpoint_robust_accuracy == pytest.approx(0.5 * (ra[0] + ra[-1]))
    # JSON round trip keeps the robust fields; aggregation and plots know them.
    back = PathResult.from_json(res.to_json())
    assert back.robust_loss == res.robust_loss and back.bn_source == "clean"
    agg = aggregate([res, back])
    assert "robust_loss" in agg.mean and agg.summary_std["robust_loss_barrier"] == 0.0


def test_zero_eps_robust_equals_clean_and_adversarial_bn(
    digits: tuple[Batches, Batches, Batches], pair: tuple[torch.nn.Module, torch.nn.Module]
) -> None:
    _, bn, test = digits
    a, b = pair
    zero = evaluate_path_robust(
        Line(a, b),
        test,
        attack=PGD(eps=0.0, alpha=0.01, steps=2),
        ts=[0.0, 0.5, 1.0],
        bn_data=bn,
        progress=False,
    )
    assert zero.robust_loss == zero.test_loss and zero.robust_acc == zero.test_acc
    adv = evaluate_path_robust(
        Line(a, b),
        test,
        attack=PGD(eps=0.1, alpha=0.04, steps=2),
        ts=[0.0, 0.5, 1.0],
        bn_data=bn,
        bn_source="adversarial",
        seed=3,
        progress=False,
    )
    assert adv.bn_source == "adversarial"
    assert len(adv.robust_acc or []) == 3
    # Other BN statistics give other clean numbers.
    assert adv.test_loss != zero.test_loss
    with pytest.raises(ConfigError, match="bn_source"):
        evaluate_path_robust(Line(a, b), test, attack=PGD(eps=0.1, alpha=0.1, steps=1), ts=2,
                             bn_data=bn, bn_source="both", progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="bn_data"):
        evaluate_path_robust(Line(a, b), test, attack=PGD(eps=0.1, alpha=0.1, steps=1), ts=2,
                             progress=False)  # fmt: skip


def test_robust_plot(tmp_path: Path) -> None:
    res = PathResult(
        ts=[0.0, 0.5, 1.0],
        test_loss=[0.1, 0.3, 0.1],
        test_acc=[90.0, 80.0, 90.0],
        robust_loss=[1.0, 2.0, 1.1],
        robust_acc=[50.0, 30.0, 49.0],
    )
    out = plot_paths({"line": res}, tmp_path / "r.png", metric="robust_loss")
    assert out.exists()
    s = res.summary()
    assert s["robust_loss_barrier"] == pytest.approx(2.0 - 1.05)
    assert s["clean_acc_at_robust_min"] == 80.0 and s["robust_acc_min_t"] == 0.5


def test_robust_curve_training_moves_the_control_point(
    digits: tuple[Batches, Batches, Batches],
) -> None:
    train, _, _ = digits
    torch.manual_seed(0)
    a, b = MLPBN(hidden=16), MLPBN(hidden=16)
    plain = Bezier(a, b)
    robust = Bezier(a, b)
    start = [p.detach().clone() for p in robust.control_parameters()]
    pgd = PGD(eps=0.1, alpha=0.04, steps=2, mode="batch-stats")
    calls: list[float] = []

    def hook(
        model: torch.nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        assert not any(v.requires_grad for v in state.values())  # detached point φ(t)
        calls.append(1.0)
        return pgd.attack_state(model, state, x, y)

    robust.train(False)
    res = train_curve(robust, train, epochs=1, lr=0.05, seed=0, progress=False, attack=hook)
    train_curve(plain, train, epochs=1, lr=0.05, seed=0, progress=False)
    assert len(calls) == 8 and len(res.history) == 1
    moved = [p.detach() for p in robust.control_parameters()]
    assert any(not torch.equal(s, m) for s, m in zip(start, moved))
    other = [p.detach() for p in plain.control_parameters()]
    assert any(not torch.allclose(m, o) for m, o in zip(moved, other))
    assert not robust.training  # modes restored
    # the endpoints never move
    assert torch.equal(robust.state_at(0.0)["net.1.weight"], a.state_dict()["net.1.weight"])
