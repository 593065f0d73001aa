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
    plain_runner = LockstepRunner(a, b, spec, pre_activation, fold=False, channels_last=False)
    plain = _taps(plain_runner, x)
    assert all(v[0].is_contiguous() for v in plain.values())
    runner = LockstepRunner(a, b, spec, pre_activation)
    fast = _taps(runner, x)
    assert runner.folded > 0
    assert runner.channels_last is True  # on CPU, with convolutions: the default
    assert any(v[0].ndim == 4 and not v[0].is_contiguous() for v in fast.values())
    assert fast.keys() == plain.keys() and len(fast) > 0
    for node, pair in plain.items():
        for got, want in zip(fast[node], pair, strict=True):
            # float32 rounding accumulated over the depth of the network, relative to the
            # size of the activations (the folded affine maps are applied in another order)
            assert float((got - want).norm() / want.norm()) < 1e-5, node
    # the models themselves are untouched (weights, buffers, layouts, in-place flags, outputs)
    for k, v in a.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert v.is_contiguous(), k
    assert torch.equal(a(x), ref_out)
    assert all(not getattr(m, "inplace", False) for m in a.modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("name", ["resnet20", "tinyten"])
def test_grey_scale_stem_runs_channels_last(name: str) -> None:
    """A one-channel input gives the first convolution ambiguous strides, and oneDNN answers
    in the default layout; the walk re-lays that output out, so every 4-D tap after the stem
    is channels-last (not only those after the second convolution), with the same values."""
    torch.manual_seed(0)
    kw = tiny_kwargs(name)
    a = create_model(name, in_channels=1, **kw).eval()
    torch.manual_seed(1)
    b = create_model(name, in_channels=1, **kw).eval()
    x = torch.randn(5, 1, 16, 16)
    spec = discover_spec(a, x[:2])
    plain = _taps(LockstepRunner(a, b, spec, False, fold=False, channels_last=False), x)
    runner = LockstepRunner(a, b, spec, False)
    fast = _taps(runner, x)
    assert runner.channels_last is True
    four_d = {k: v for k, v in fast.items() if v[0].ndim == 4}
    assert len(four_d) >= 3
    for node, pair in four_d.items():
        for t in pair:
            assert t.is_contiguous(memory_format=torch.channels_last), node
            assert not t.is_contiguous(), node
    for node, pair in plain.items():
        for got, want in zip(fast[node], pair, strict=True):
            assert float((got - want).norm() / want.norm()) < 1e-5, node


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
    # offsets of 10 std: the shifted path (a shifted copy per side, and the batch's sums)
    xs = [torch.randn(5, 4, 3, 3, generator=gen) + 10 for _ in range(3)]
    ys = [torch.randn(5, 4, 3, 3, generator=gen) for _ in range(3)]
    fresh, reused = CrossCorrelation(4), CrossCorrelation(4)
    ws: dict[tuple[object, ...], torch.Tensor] = {}
    for x, y in zip(xs, ys, strict=True):
        fresh.update(x, y)
        with scratch_buffers(ws):
            reused.update(x, y)
    assert fresh.direct is False
    assert len(ws) == 3  # one buffer per side and shape, one for the batch's sums
    assert torch.equal(fresh.correlation(), reused.correlation())
    # small offsets: the direct path copies nothing, only the batch's sums are a buffer
    fresh, reused = CrossCorrelation(4), CrossCorrelation(4)
    ws = {}
    for x, y in zip(xs, ys, strict=True):
        fresh.update(x - 10, y)
        with scratch_buffers(ws):
            reused.update(x - 10, y)
    assert fresh.direct is True
    assert len(ws) == 1
    assert torch.equal(fresh.correlation(), reused.correlation())


class _Awkward(nn.Module):
    """Aliases, a ``.view`` of a feature map and a broadcasting residual addition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.ident = nn.Identity()
        self.drop = nn.Dropout(0.5)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bias = nn.Parameter(torch.randn(4, 1, 1))
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        alias = self.ident(h)  # the same tensor as h
        r = torch.relu(alias)  # must not overwrite h, which is read again below
        d = self.drop(r)  # eval mode: d is r itself
        g = torch.relu(d)  # must not overwrite r, read again below
        y = self.conv2(g) + r  # conv output is fresh: may be summed into in place
        z = self.bias.expand(4, 8, 8) + y  # broadcasting left operand: not in place
        z = torch.relu(z) + h
        return self.fc(z.view(z.shape[0], -1))  # .view fails on channels-last


def test_in_place_only_on_fresh_values_and_view_falls_back() -> None:
    torch.manual_seed(0)
    a, b = _Awkward().eval(), _Awkward().eval()
    x = torch.randn(5, 3, 8, 8)
    spec = discover_spec(a, x[:2])
    runner = LockstepRunner(a, b, spec, False)
    got = _taps(runner, x)
    assert runner.channels_last is False  # the .view made the probe fall back
    assert len(got) > 0
    # every tapped value equals the model's own forward value at that node
    from torch import fx

    from neuralign.perm.trace import trace_model

    gm = fx.GraphModule(a, trace_model(a, ()))
    ref: dict[str, torch.Tensor] = {}

    class _Rec(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                ref[n.name] = out.clone()
            return out

    with torch.no_grad():
        _Rec(gm).run(x)
    # (an in-place ReLU on the alias of h corrupts the taps after it: this fails then)
    for node, (va, _) in got.items():
        torch.testing.assert_close(va, ref[node], rtol=1e-5, atol=1e-5)
