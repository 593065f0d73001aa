"""Curve training: functional purity, exact resume, aux heads, and that it finds a better path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from nets_testlib import MLPBN, Batches, ConvBN, make_pair
from neuralign.curves import Bezier, Line, PolyChain, train_curve
from neuralign.errors import ConfigError
from neuralign.optim.schedules import lr_at
from neuralign.paths import curve_test_point, evaluate_path


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _random_batches(n: int = 96, batch: int = 32, seed: int = 0) -> Batches:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return Batches(x, y, batch, shuffle=True, seed=seed)


def test_training_is_functional() -> None:
    a, b = make_pair(ConvBN)
    a_before, b_before = _snapshot(a), _snapshot(b)
    curve = Bezier(a, b, num_bends=3)
    curve.model.bn.eval()  # a mixed mode that must come back as it was
    model_before = _snapshot(curve.model)
    ends_before = (_snapshot(curve.endpoint_a), _snapshot(curve.endpoint_b))
    mid_before = [p.detach().clone() for p in curve.control_parameters()]
    result = train_curve(curve, _random_batches(), epochs=2, lr=0.05, progress=False)
    assert len(result.history) == 2
    for ref, mod in ((model_before, curve.model), (a_before, a), (b_before, b)):
        for k, v in mod.state_dict().items():
            assert torch.equal(v, ref[k]), k
    for ref, store in zip(ends_before, (curve.endpoint_a, curve.endpoint_b)):
        for k, v in store.state_dict().items():
            assert torch.equal(v, ref[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(curve.control_parameters(), mid_before)), (
        "the interior point did not move"
    )
    assert curve.model.training and not curve.model.bn.training
    assert {"epoch", "loss", "objective", "acc", "lr", "time"} <= set(result.history[0])


class _Interrupt(Exception):
    pass


class _DyingBatches(Batches):
    """Raises at the start of epoch ``die_at`` (simulates a killed run)."""

    def __init__(self, base: Batches, die_at: int) -> None:
        super().__init__(base.x, base.y, base.batch_size, base.shuffle, base.seed)
        self.die_at = die_at

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.epoch == self.die_at:
            raise _Interrupt
        yield from super().__iter__()


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_resume_equals_uninterrupted(tmp_path: Path, schedule: str) -> None:
    a, b = make_pair(MLPBN)
    kw = dict(epochs=4, lr=0.05, schedule=schedule, lr_step=2, progress=False, seed=3)
    data = _random_batches(seed=1)

    full = PolyChain(a, b, num_bends=4)
    ref = train_curve(full, data, **kw)  # type: ignore[arg-type]

    resumed = PolyChain(a, b, num_bends=4)
    ckpt, log = tmp_path / "ckpt", tmp_path / "log.jsonl"
    with pytest.raises(_Interrupt):
        train_curve(resumed, _DyingBatches(data, die_at=2), checkpoint_dir=ckpt, log_path=log, **kw)  # type: ignore[arg-type]
    assert len(log.read_text().splitlines()) == 2
    fresh = PolyChain(a, b, num_bends=4)  # a new process would rebuild the curve
    out = train_curve(fresh, data, checkpoint_dir=ckpt, log_path=log, **kw)  # type: ignore[arg-type]
    assert out.resumed_from == 2
    for p, q in zip(full.control_parameters(), fresh.control_parameters()):
        assert torch.equal(p, q)
    assert [h["loss"] for h in out.history] == [h["loss"] for h in ref.history]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert (ckpt / "curve.safetensors").exists()
    # a finished run resumes to a no-op
    again = train_curve(PolyChain(a, b, num_bends=4), data, checkpoint_dir=ckpt, **kw)  # type: ignore[arg-type]
    assert len(again.history) == 4


class _AuxNet(nn.Module):
    """Returns (logits, aux) in train mode, like GoogLeNet."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 10)
        self.aux = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        h = self.body(x)
        return (self.head(h), self.aux(h)) if self.training else self.head(h)


def test_aux_heads_are_trained_with_weight() -> None:
    torch.manual_seed(0)
    a, b = _AuxNet(), _AuxNet()
    data = _random_batches()
    curve = Bezier(a, b)
    train_curve(curve, data, epochs=1, aux_weight=0.3, progress=False)
    idx = curve.interpolated_keys.index("aux.weight")
    moved = curve.control_parameters()[idx]
    assert not torch.allclose(moved, 0.5 * (a.aux.weight + b.aux.weight))
    curve2 = Bezier(a, b)
    train_curve(curve2, data, epochs=1, aux_weight=0.0, progress=False, weight_decay=0.0)
    # without aux loss and weight decay the aux head gets no gradient at all
    assert torch.equal(curve2.control_parameters()[idx], 0.5 * a.aux.weight + 0.5 * b.aux.weight)


def test_lr_schedules_and_errors() -> None:
    assert lr_at(0, base_lr=0.1, schedule="step", epochs=100) == 0.1
    assert lr_at(19, base_lr=0.1, schedule="step", epochs=100) == 0.1
    assert lr_at(20, base_lr=0.1, schedule="step", epochs=100) == pytest.approx(0.05)
    assert lr_at(45, base_lr=0.1, schedule="step", epochs=100) == pytest.approx(0.025)
    assert lr_at(3, base_lr=0.1, schedule="step", epochs=100, step=3, gamma=0.1) == pytest.approx(
        0.01
    )
    assert lr_at(5, base_lr=0.1, schedule="cosine", epochs=10) == pytest.approx(0.05)
    assert lr_at(7, base_lr=0.1, schedule="constant", epochs=10) == 0.1
    a, b = make_pair(ConvBN)
    with pytest.raises(ConfigError, match="no trainable"):
        train_curve(Line(a, b), _random_batches(), epochs=1, progress=False)
    with pytest.raises(ConfigError):
        train_curve(Bezier(a, b), _random_batches(), epochs=1, schedule="bogus")


def test_curve_training_lowers_the_barrier(
    digits: tuple[Tensor, Tensor, Tensor, Tensor], trained_mlps: tuple[MLPBN, MLPBN]
) -> None:
    xtr, ytr, xte, yte = digits
    a, b = trained_mlps
    train = Batches(xtr, ytr, 64, shuffle=True)
    test = Batches(xte, yte, 256)
    bn = Batches(xtr, ytr, 256)
    line = evaluate_path(Line(a, b), test, ts=11, bn_data=bn, progress=False)
    curve = Bezier(a, b, num_bends=3)
    res = train_curve(
        curve,
        train,
        epochs=6,
        lr=0.05,
        schedule="constant",
        progress=False,
        evaluate=curve_test_point(bn, test, t=0.5),
    )
    assert len(res.history) == 6
    # the hook evaluated the trained midpoint: the same numbers as evaluating it directly
    mid = evaluate_path(curve, test, ts=[0.5], bn_data=bn, bn_max_batches=50, progress=False)
    assert res.history[-1]["test_acc"] == pytest.approx(mid.test_acc[0], abs=1e-6)
    path = evaluate_path(curve, test, ts=11, bn_data=bn, progress=False)
    assert path.test_loss[0] == pytest.approx(line.test_loss[0])
    assert path.test_loss[-1] == pytest.approx(line.test_loss[-1])
    assert path.max_loss < line.max_loss
    assert path.min_accuracy > line.min_accuracy
