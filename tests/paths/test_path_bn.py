"""BatchNorm statistics recomputation: exact pooled statistics, no side effects."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from nets_testlib import MLPBN, Batches, ConvBN, make_pair
from neuralign.errors import DataError
from neuralign.paths import has_batchnorm, recompute_bn


def _data(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen) * 3.0 + 1.0, torch.zeros(n, dtype=torch.int64)


def _uneven(x: Tensor, y: Tensor, sizes: list[int]) -> list[tuple[Tensor, Tensor]]:
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    assert start == x.shape[0]
    return out


def test_conv_bn_equals_direct_statistics_with_unequal_batches() -> None:
    model, _ = make_pair(ConvBN)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data(100)
    batches = _uneven(x, y, [7, 32, 13, 48])
    new = recompute_bn(model, state, batches)
    with torch.no_grad():
        h = model.conv(x).double()  # the BN input over all data
    mean = h.mean(dim=(0, 2, 3))
    var = h.var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(new["bn.running_mean"].double(), mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(new["bn.running_var"].double(), var, rtol=1e-5, atol=1e-6)
    assert int(new["bn.num_batches_tracked"]) == 4
    assert new["bn.running_mean"].dtype == torch.float32
    # everything else is passed through unchanged
    for k in state:
        if not k.startswith("bn.running") and k != "bn.num_batches_tracked":
            assert new[k] is state[k]


def test_equal_batches_mean_matches_pytorch_cumulative_average() -> None:
    # PyTorch's momentum=None recipe averages per-batch statistics with equal weights: with
    # equal batches its mean is exact; its variance is the mean within-batch variance, i.e.
    # the pooled variance minus the (n/(n-1)-scaled) spread of the batch means.
    model, _ = make_pair(ConvBN)
    state = model.state_dict()
    x, y = _data(96, seed=1)
    batches = _uneven(x, y, [32, 32, 32])
    new = recompute_bn(model, state, batches)
    ref = ConvBN()
    ref.load_state_dict(state)
    ref.bn.reset_running_stats()
    ref.bn.momentum = None
    ref.train()
    with torch.no_grad():
        for xb, _ in batches:
            ref(xb)
    assert torch.allclose(new["bn.running_mean"], ref.bn.running_mean, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        h = torch.stack([model.conv(xb).double() for xb, _ in batches])  # (3, 32, C, 8, 8)
    per_batch = h.transpose(1, 2).flatten(2)  # (3, C, 32 * 64)
    within = per_batch.var(dim=2).mean(0)
    assert torch.allclose(ref.bn.running_var.double(), within, rtol=1e-5)
    pooled = per_batch.transpose(0, 1).flatten(1).var(dim=1)
    assert torch.allclose(new["bn.running_var"].double(), pooled, rtol=1e-5)
    assert not torch.allclose(new["bn.running_var"], ref.bn.running_var, rtol=1e-5)


def test_deep_bn_matches_single_full_batch() -> None:
    # With one batch holding all data, PyTorch's train-mode update is the exact statistic of
    # every layer's input, including BN layers fed by earlier BN layers.
    model, _ = make_pair(MLPBN)
    state = model.state_dict()
    x, y = _data(120, seed=2)
    ref = MLPBN()
    ref.load_state_dict(state)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    ref.train()
    with torch.no_grad():
        ref(x)
    new = recompute_bn(model, state, [(x, y)])
    for k in ("net.2.running_mean", "net.2.running_var", "net.5.running_mean", "net.5.running_var"):
        assert torch.allclose(new[k], ref.state_dict()[k], rtol=1e-5, atol=1e-6), k
    # the first BN layer's input is a plain affine map of the data: check unequal batches
    batches = _uneven(x, y, [50, 3, 67])
    new = recompute_bn(model, state, batches)
    with torch.no_grad():
        h = model.net[1](x.flatten(1)).double()
    assert torch.allclose(new["net.2.running_mean"].double(), h.mean(0), rtol=1e-5, atol=1e-6)
    assert torch.allclose(new["net.2.running_var"].double(), h.var(0), rtol=1e-5, atol=1e-6)


def test_max_batches_uses_a_prefix() -> None:
    model, _ = make_pair(ConvBN)
    x, y = _data(64, seed=3)
    batches = _uneven(x, y, [16, 16, 32])
    a = recompute_bn(model, model.state_dict(), batches, max_batches=2)
    b = recompute_bn(model, model.state_dict(), batches[:2])
    assert torch.equal(a["bn.running_mean"], b["bn.running_mean"])
    assert int(a["bn.num_batches_tracked"]) == 2


def test_no_side_effects_even_on_error() -> None:
    model, _ = make_pair(MLPBN)
    model.train()
    model.net[2].eval()  # mixed modes must come back exactly
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    recompute_bn(model, state, Batches(*_data(40), batch_size=8))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert torch.equal(state[k], before[k]), k  # the input state is not written to
    assert {name: m.training for name, m in model.named_modules()} == modes

    bad = [(torch.rand(8, 1, 8, 8), torch.zeros(8)), (torch.rand(8, 3), torch.zeros(8))]
    with pytest.raises(RuntimeError):
        recompute_bn(model, state, bad)
    assert {name: m.training for name, m in model.named_modules()} == modes
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks
    with pytest.raises(DataError):
        recompute_bn(model, state, [])
    with pytest.raises(DataError, match="no usable batch"), pytest.warns(UserWarning):
        recompute_bn(model, state, [(torch.rand(1, 1, 8, 8), torch.zeros(1))])
    # a trailing batch of one is skipped (with a warning), not fatal
    x, y = _data(9, seed=4)
    with pytest.warns(UserWarning, match="single sample"):
        skipped = recompute_bn(model, state, [(x[:8], y[:8]), (x[8:], y[8:])])
    assert torch.equal(
        skipped["net.2.running_mean"],
        recompute_bn(model, state, [(x[:8], y[:8])])["net.2.running_mean"],
    )


def test_model_without_bn_is_passed_through() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert not has_batchnorm(model)
    state = model.state_dict()
    out = recompute_bn(model, state, [])
    assert out == state and out is not state


def test_fast_and_fallback_paths_agree_and_restore_momentum() -> None:
    # Stock BatchNorm layers hand over their own batch moments (momentum=1 on zeroed
    # buffers); a subclass with its own forward is measured by a pre-hook instead. Both give
    # the directly computed statistics, and the momenta come back.

    class OwnForwardBN(nn.BatchNorm2d):
        def forward(self, x: Tensor) -> Tensor:
            return super().forward(x)

    model, _ = make_pair(ConvBN)
    model.bn.momentum = 0.3
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["bn.running_var"].fill_(float("inf"))  # must not leak into the momentum=1 update
    x, y = _data(80, seed=6)
    batches = _uneven(x, y, [30, 11, 39])
    fast = recompute_bn(model, state, batches)
    assert model.bn.momentum == 0.3
    odd = ConvBN()
    odd.bn = OwnForwardBN(odd.bn.num_features)
    odd.load_state_dict(model.state_dict())
    slow = recompute_bn(odd, state, batches)
    with torch.no_grad():
        h = model.conv(x).double()
    for new in (fast, slow):
        assert torch.allclose(
            new["bn.running_mean"].double(), h.mean((0, 2, 3)), rtol=1e-5, atol=1e-6
        )
        assert torch.allclose(
            new["bn.running_var"].double(), h.var((0, 2, 3)), rtol=1e-5, atol=1e-6
        )
    assert torch.isinf(state["bn.running_var"]).all()  # the input state is untouched
