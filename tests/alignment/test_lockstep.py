"""The lock-step pass: eval-mode BN folding and in-place ReLU change tapped values only by
float rounding, and never touch the models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralign.alignment._lockstep import LockstepRunner
from neuralign.alignment.correlation_stats import CrossCorrelation, scratch_buffers
from neuralign.models import create_model, tiny_kwargs
from neuralign.perm import discover_spec


def _model(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = create_model(name, in_channels=3, **tiny_kwargs(name))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
    return m.eval()


def _taps(runner: LockstepRunner, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    out: dict[str, tuple[torch.Tensor, ...]] = {}

    def cb(node: str, a: torch.Tensor, b: torch.Tensor) -> None:
        out[node] = (a.clone(), b.clone())

    runner.run(x, cb)
    return out


@pytest.mark.parametrize("name", ["resnet20", "tinyten"])
@pytest.mark.parametrize("pre_activation", [False, True])
def test_folding_changes_taps_only_by_rounding(name: str, pre_activation: bool) -> None:
    a, b = _model(name, 0), _model(name, 1)
    x = torch.randn(6, 3, 16, 16)
    spec = discover_spec(a, x[:2])
    before = {k: v.clone() for k, v in a.state_dict().items()}
    ref_out = a(x)
    plain = _taps(LockstepRunner(a, b, spec, pre_activation, fold=False), x)
    runner = LockstepRunner(a, b, spec, pre_activation)
    fast = _taps(runner, x)
    assert runner.folded > 0
    assert fast.keys() == plain.keys() and len(fast) > 0
    for node, pair in plain.items():
        for got, want in zip(fast[node], pair, strict=True):
            # float32 rounding accumulated over the depth of the network, relative to the
            # size of the activations (the folded affine maps are applied in another order)
            assert float((got - want).norm() / want.norm()) < 1e-5, node
    # the models themselves are untouched (weights, buffers, in-place flags, outputs)
    for k, v in a.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(a(x), ref_out)
    assert all(not getattr(m, "inplace", False) for m in a.modules() if isinstance(m, nn.ReLU))


def test_no_folding_when_a_model_is_in_train_mode() -> None:
    a, b = _model("tinyten", 0), _model("tinyten", 1)
    x = torch.randn(4, 3, 16, 16)
    spec = discover_spec(a, x[:2])
    a.train()
    runner = LockstepRunner(a, b, spec, False)
    _taps(runner, x)
    assert runner.folded == 0


def test_scratch_buffers_are_reused_and_give_the_same_sums() -> None:
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(5, 4, 3, 3, generator=gen) + 2 for _ in range(3)]
    ys = [torch.randn(5, 4, 3, 3, generator=gen) for _ in range(3)]
    fresh, reused = CrossCorrelation(4), CrossCorrelation(4)
    ws: dict[tuple[object, ...], torch.Tensor] = {}
    for x, y in zip(xs, ys, strict=True):
        fresh.update(x, y)
        with scratch_buffers(ws):
            reused.update(x, y)
    assert len(ws) == 2  # one buffer per side and shape
    assert torch.equal(fresh.correlation(), reused.correlation())
