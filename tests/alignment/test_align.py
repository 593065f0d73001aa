"""Alignment: recovers planted permutations, exact streaming statistics, no residue."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from neuralign.alignment import align, correlation_statistics
from neuralign.alignment._lap import solve_lap
from neuralign.alignment.correlation_stats import EPS, CrossCorrelation, units_as_rows
from neuralign.errors import ConfigError
from neuralign.models import create_model, list_models, tiny_kwargs
from neuralign.paths import recompute_bn
from neuralign.perm import Permutation, discover_spec, permute_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _calibrated(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A tiny zoo model whose units are all alive and distinct, with inputs for it.

    BN γ, β are drawn so ReLU units are active, and the running statistics are recomputed
    on the inputs, as for a trained network.
    """
    torch.manual_seed(seed)
    kw = dict(tiny_kwargs(name))
    shape = (1, 28, 28) if name == "mlp" else (3, 16, 16)
    if name == "mlp":
        kw["image_size"] = 28
    if name == "vit":
        kw["image_size"] = 16
    m = create_model(name, in_channels=shape[0], **kw)
    with torch.no_grad():
        if name in ("vit", "convnext"):  # no BatchNorm: unit-scale weights, alive units
            for p in m.parameters():
                if p.dim() > 1:
                    nn.init.normal_(p, std=p[0].numel() ** -0.5)
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(0.0, 0.5)
    x = torch.rand(40, *shape)
    m.load_state_dict(recompute_bn(m, m.state_dict(), [(x, None)]))
    return m.eval(), x


def _alive_groups(stats) -> set[str]:
    alive = set()
    for g, accs in stats.accumulators.items():
        if all(bool((a.s_xx / a.count - (a.s_x / a.count) ** 2 > 1e-12).all()) for a in accs):
            alive.add(g)
    return alive


@pytest.mark.parametrize("name", list_models())
def test_recovers_planted_permutation(name: str) -> None:
    m, x = _calibrated(name)
    spec = discover_spec(m, x[:2])
    perm = Permutation.random(spec, seed=3)
    b = permute_model(m, perm, spec)
    inverse = perm.inverse()
    batches = [x[:24], x[24:]]
    stats = correlation_statistics(m, b, spec, batches)
    alive = _alive_groups(stats)
    # Dead (constant) units are interchangeable; every group of these models is alive
    # except, possibly, GoogLeNet's auxiliary fc layer on 40 random images.
    assert len(alive) >= len(spec.groups) - 2
    for method in ("correlation", "weight"):
        res = align(m, b, batches, method=method, spec=spec)
        check = alive if method == "correlation" else set(spec.groups)
        for g in check:
            assert torch.equal(res.permutation.perms[g], inverse.perms[g]), (method, g)
        # the aligned model computes the same function as B
        with torch.no_grad():
            out_b, out_al = b(x), res.aligned_b(x)
        torch.testing.assert_close(out_al, out_b, rtol=1e-4, atol=1e-5)
        if method == "correlation":
            for g in alive:
                assert res.correlation_after[g] == pytest.approx(1.0, abs=1e-3)


def test_inputs_untouched_and_modes_restored() -> None:
    m, x = _calibrated("tinyten")
    b = copy.deepcopy(m)
    m.train()
    b.eval()
    before_a = {k: v.clone() for k, v in m.state_dict().items()}
    before_b = {k: v.clone() for k, v in b.state_dict().items()}
    res = align(m, b, [x], method="correlation")
    assert m.training and not b.training
    assert all(torch.equal(before_a[k], v) for k, v in m.state_dict().items())
    assert all(torch.equal(before_b[k], v) for k, v in b.state_dict().items())
    assert res.aligned_b is not b
    assert res.permutation.is_identity()


def _hook_count(model: nn.Module) -> int:
    return sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in model.modules())


def test_no_hooks_left_also_after_an_exception() -> None:
    m, x = _calibrated("resnet20")
    b = copy.deepcopy(m)
    spec = discover_spec(m, x[:2])

    def bad_batches():
        yield x[:16]
        raise RuntimeError("data source failed")

    m.train()
    with pytest.raises(RuntimeError, match="data source failed"):
        correlation_statistics(m, b, spec, bad_batches())
    assert _hook_count(m) == 0 and _hook_count(b) == 0
    assert m.training and not b.training
    assert all(mod.training for mod in m.modules())


def test_dead_units_give_zero_not_nan() -> None:
    acc = CrossCorrelation(3)
    a = torch.rand(10, 3, 4, 4)
    a[:, 1] = 0.0  # a dead unit
    b = torch.rand(10, 3, 4, 4)
    b[:, 2] = 5.0  # a constant unit
    acc.update(a, b)
    c = acc.correlation()
    assert torch.isfinite(c).all()
    assert torch.equal(c[1], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(c[:, 2], torch.zeros(3, dtype=torch.float64))


def test_streaming_equals_full_matrix_statistics() -> None:
    torch.manual_seed(0)
    a = torch.randn(37, 5, 3, 3) * 4 + 10
    b = torch.randn(37, 5, 3, 3) + 0.3 * a.flip(1)
    acc = CrossCorrelation(5)
    for chunk_a, chunk_b in zip(a.split([1, 7, 20, 9]), b.split([1, 7, 20, 9]), strict=True):
        acc.update(chunk_a, chunk_b)
    x = units_as_rows(a).double().numpy()
    y = units_as_rows(b).double().numpy()
    mx, my = x.mean(0), y.mean(0)
    cov = (x - mx).T @ (y - my) / x.shape[0]
    sx, sy = x.std(0), y.std(0)
    expected = cov / np.outer(sx + EPS, sy + EPS)
    # float32 per-batch GEMMs, float64 accumulation
    np.testing.assert_allclose(acc.correlation().numpy(), expected, rtol=1e-5, atol=1e-6)
    exact = CrossCorrelation(5, batch_dtype=torch.float64)
    for chunk_a, chunk_b in zip(a.split([1, 7, 20, 9]), b.split([1, 7, 20, 9]), strict=True):
        exact.update(chunk_a, chunk_b)
    np.testing.assert_allclose(exact.correlation().numpy(), expected, rtol=1e-10, atol=1e-12)
    assert acc.count == 37 * 9
    # merging two accumulators equals one pass over everything
    # merging accumulators (each shifted by its own first batch's means) equals one pass
    a1 = CrossCorrelation(5, batch_dtype=torch.float64)
    a2 = CrossCorrelation(5, batch_dtype=torch.float64)
    a1.update(a[:20], b[:20])
    a2.update(a[20:], b[20:])
    assert not torch.equal(a1.shift_x, a2.shift_x)
    np.testing.assert_allclose(
        a1.merge_(a2).correlation().numpy(), expected, rtol=1e-10, atol=1e-12
    )


def _reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    x = units_as_rows(a).double()
    y = units_as_rows(b).double()
    x, y = x - x.mean(0), y - y.mean(0)
    cov = x.T @ y / x.shape[0]
    return cov / torch.outer(x.square().mean(0).sqrt() + EPS, y.square().mean(0).sqrt() + EPS)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d"])
@pytest.mark.parametrize("offset", [0.7, 2.5, 12.0])
def test_direct_and_shifted_paths_match_float64(layout: str, offset: float) -> None:
    """Small offsets take the copy-free direct path, large ones the shifted one; both exact.

    The direct path sums unshifted float32 products, whose error grows with (mean/std)^2:
    at the 4-std bound it stays within ~3e-6 of the float64 statistic (1e-5 asserted).
    """
    gen = torch.Generator().manual_seed(int(offset * 10))
    shape = (40, 6) if layout == "2d" else (40, 6, 5, 5)
    z = torch.randn(*shape, generator=gen)
    a = z + offset
    b = 0.5 * z.flip(1) + torch.randn(*shape, generator=gen) + offset
    if layout == "channels_last":
        a = a.contiguous(memory_format=torch.channels_last)
        b = b.contiguous(memory_format=torch.channels_last)
    acc = CrossCorrelation(6)
    for ca, cb in zip(a.split([20, 11, 9]), b.split([20, 11, 9]), strict=True):
        acc.update(ca, cb)
    assert acc.direct is (offset < 4)
    expected = _reference(a, b)
    got = acc.correlation()
    err = float((got - expected).abs().max())
    assert err < (1e-5 if offset < 4 else 1e-6), err
    assert acc.count == a.numel() // 6
    # the running sums read back (re-expressed around the shift) equal the shifted sums
    assert acc.shift_x is not None
    x = units_as_rows(a).double() - acc.shift_x
    torch.testing.assert_close(acc.s_x, x.sum(0), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(acc.s_xx, x.square().sum(0), rtol=1e-5, atol=1e-3)
    # merging a direct and a shifted accumulator still equals one pass
    other = CrossCorrelation(6)
    other.update(a[:20] + 50, b[:20])
    other2 = CrossCorrelation(6)
    other2.update(a[20:] + 50, b[20:])
    assert other.direct is False
    first = CrossCorrelation(6)
    first.update(a[:20], b[:20])
    second = CrossCorrelation(6)
    second.update(a[20:], b[20:])
    merged = first.merge_(second).correlation()
    assert float((merged - expected).abs().max()) < 1e-5
    torch.testing.assert_close(
        other.merge_(other2).correlation(), _reference(a + 50, b), rtol=0, atol=1e-6
    )


def test_channels_last_gram_is_the_convolution_weight_gradient() -> None:
    """On CPU, channels-last feature maps take oneDNN's 1x1 weight gradient for the cross
    sums; it equals the float64 sum of x yᵀ over every image and position, and the default
    layout keeps the per-image GEMMs."""
    from neuralign.alignment.correlation_stats import _conv_gram, _gram_by_conv

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(7, 5, 6, 4, generator=gen).relu() + 0.2
    b = torch.randn(7, 5, 6, 4, generator=gen).relu()
    a_cl = a.contiguous(memory_format=torch.channels_last)
    b_cl = b.contiguous(memory_format=torch.channels_last)
    if torch.backends.mkldnn.is_available():
        assert _gram_by_conv(a_cl, b_cl)
    assert not _gram_by_conv(a, b)
    assert not _gram_by_conv(a_cl.double(), b_cl.double())
    out = torch.empty(5, 5)
    _conv_gram(a_cl, b_cl, out)
    want = units_as_rows(a).double().T @ units_as_rows(b).double()
    torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=1e-5)
    # not the transpose: rows are a's units
    assert float((out.double() - want.T).abs().max()) > 1e-2


def test_unit_sums_by_batchnorm_backward_equal_float64_sums() -> None:
    """On CPU, a float32 samples x units batch takes Σx and Σx² per unit from BatchNorm's
    backward kernel over a wide view; both equal the float64 sums to float32 round-off
    (the plain kernel over ~10⁵ rows is off by ~5e-6), including after a fold of the rows
    into several partial sums, and it declines what it cannot do."""
    from neuralign.alignment.correlation_stats import (
        _BN_MAX_ROWS,
        _bn_fold,
        _bn_unit_sums,
        _direct_sums,
    )

    gen = torch.Generator().manual_seed(5)
    for rows, n in [(125 * 784, 16), (117 * 196, 32), (6125, 64), (127, 512), (6, 3)]:
        z = (torch.randn(rows, n, generator=gen).relu() * 3 + 1).contiguous()
        k = _bn_fold(rows, n)
        assert k is not None and rows % k == 0 and rows // k <= _BN_MAX_ROWS
        s, q = torch.empty(n), torch.empty(n)
        assert _bn_unit_sums(z, s, q)
        d = z.double()
        torch.testing.assert_close(s.double(), d.sum(0), rtol=1e-6, atol=0)
        torch.testing.assert_close(q.double(), (d * d).sum(0), rtol=1e-6, atol=0)
    assert _bn_fold(125 * 784, 16) > 1  # the ~10⁵-row case is split into partial sums
    prime = 16411  # > _BN_MAX_ROWS and prime: no admissible fold
    assert _bn_fold(prime, 4) is None
    s, q = torch.empty(4), torch.empty(4)
    assert not _bn_unit_sums(torch.rand(prime, 4), s, q)
    assert not _bn_unit_sums(torch.rand(60, 4).double(), s.double(), q.double())
    assert not _bn_unit_sums(torch.rand(4, 60).T, s, q)  # not contiguous
    # the direct sums fall back to the plain reductions there and stay exact
    a = torch.rand(prime, 4, generator=gen) + 0.5
    b = torch.rand(prime, 4, generator=gen)
    part = torch.empty(8, 4)
    assert _direct_sums(a, b, part, rows=True) == prime
    torch.testing.assert_close(part[5].double(), b.double().sum(0), rtol=1e-6, atol=0)
    torch.testing.assert_close(part[6].double(), (a.double() ** 2).sum(0), rtol=1e-6, atol=0)


def test_batch_split_does_not_change_statistics() -> None:
    m, x = _calibrated("tinyten")
    spec = discover_spec(m, x[:2])
    b = permute_model(m, Permutation.random(spec, seed=1), spec)
    s1 = correlation_statistics(m, b, spec, [x], micro_batches=1, batch_dtype=torch.float64)
    s2 = correlation_statistics(
        m, b, spec, [x[:5], x[5:30], x[30:]], micro_batches=3, batch_dtype=torch.float64
    )
    for g in s1.accumulators:
        torch.testing.assert_close(s1.correlation(g), s2.correlation(g), rtol=1e-5, atol=1e-6)


def test_resnet_residual_groups_are_tied() -> None:
    m, x = _calibrated("resnet20")
    spec = discover_spec(m, x[:2])
    stats = correlation_statistics(m, copy.deepcopy(m), spec, [x])
    streams = [g for g in spec.groups if g.endswith(".residual")]
    assert len(streams) == 3
    # one assignment per stream, fed by the stem/each block output of that stage
    for g in streams:
        assert len(stats.accumulators[g]) >= 3
    stem_stream = next(g for g in streams if any(t.node for t in spec.groups[g].taps))
    assert len(spec.groups[stem_stream].members) > 6


def test_lap_maximises() -> None:
    s = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.1], [0.0, 0.3, 0.7]])
    assert solve_lap(s).tolist() == [1, 0, 2]


def test_bad_arguments() -> None:
    m, x = _calibrated("mlp")
    with pytest.raises(ConfigError, match="unknown alignment method"):
        align(m, m, [x], method="magic")
    with pytest.raises(ConfigError, match="needs data"):
        align(m, m, None, method="correlation", example_input=x[:2])
