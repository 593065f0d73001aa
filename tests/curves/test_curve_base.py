"""Curve construction, coefficients, exact endpoints, and persistence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

from nets_testlib import MLPBN, ConvBN, make_pair
from neuralign.curves import (
    Bezier,
    Curve,
    Line,
    PolyChain,
    bernstein,
    functional_forward,
    fused_combination,
    interpolated_keys,
    parameter_distance,
    polychain_coefficients,
)
from neuralign.errors import CheckpointError, ConfigError

TS = [0.0, 1e-7, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.9, 1 - 1e-7, 1.0]


@pytest.mark.parametrize("num_bends", [2, 3, 4, 5])
def test_bezier_coefficients_closed_form(num_bends: int) -> None:
    a, b = make_pair(ConvBN)
    curve = Bezier(a, b, num_bends=num_bends)
    d = num_bends - 1
    for t in TS:
        c = curve.coefficients(t)
        assert c.shape == (num_bends,) and c.dtype == torch.float64
        expected = [math.comb(d, k) * t**k * (1 - t) ** (d - k) for k in range(num_bends)]
        assert torch.allclose(c, torch.tensor(expected, dtype=torch.float64), atol=0, rtol=1e-15)
        assert abs(float(c.sum()) - 1.0) < 1e-12
    # the paper's quadratic curve: (1-t)^2, 2t(1-t), t^2
    if num_bends == 3:
        assert curve.coefficients(0.3).tolist() == pytest.approx([0.49, 0.42, 0.09], abs=1e-15)
    assert curve.coefficients(0.0).tolist() == [1.0] + [0.0] * d
    assert curve.coefficients(1.0).tolist() == [0.0] * d + [1.0]


@pytest.mark.parametrize("num_bends", [2, 3, 4, 5])
def test_polychain_coefficients_closed_form(num_bends: int) -> None:
    a, b = make_pair(ConvBN)
    curve = PolyChain(a, b, num_bends=num_bends)
    for t in TS:
        c = curve.coefficients(t).tolist()
        expected = [max(0.0, 1.0 - abs(t * (num_bends - 1) - k)) for k in range(num_bends)]
        assert c == pytest.approx(expected, abs=1e-15)
        assert sum(c) == pytest.approx(1.0, abs=1e-12)
        assert sum(v > 0 for v in c) <= 2
    # hand values for 3 bends at t = 0.25 and 0.75
    assert polychain_coefficients(0.25, 3) == pytest.approx([0.5, 0.5, 0.0])
    assert polychain_coefficients(0.75, 3) == pytest.approx([0.0, 0.5, 0.5])
    assert bernstein(0.5, 3) == pytest.approx([0.25, 0.5, 0.25])


def test_line_is_two_bends() -> None:
    a, b = make_pair(ConvBN)
    line = Line(a, b)
    assert line.num_bends == 2 and line.control_parameters() == []
    assert line.coefficients(0.3).tolist() == pytest.approx([0.7, 0.3])
    with pytest.raises(ConfigError):
        Line(a, b, num_bends=3)


@pytest.mark.parametrize(
    "cls,n", [(Bezier, 3), (Bezier, 5), (PolyChain, 3), (PolyChain, 4), (Line, 2)]
)
@pytest.mark.parametrize("net", [ConvBN, MLPBN])
def test_endpoints_bit_exact(cls: type[Curve], n: int, net: type[nn.Module]) -> None:
    a, b = make_pair(net)
    curve = cls(a, b, num_bends=n)
    with torch.no_grad():  # move the interior points off the line
        for p in curve.control_parameters():
            p.add_(torch.randn_like(p))
    sa, sb = a.state_dict(), b.state_dict()
    s0, s1 = curve.state_at(0.0), curve.state_at(1)
    assert list(s0) == list(sa) and list(s1) == list(sb)
    for k in sa:
        assert torch.equal(s0[k], sa[k]), k
        assert torch.equal(s1[k], sb[k]), k
        assert s0[k].dtype == sa[k].dtype
    # tensors handed out are copies: mutating them does not reach the curve
    s0[next(iter(s0))].add_(1.0)
    assert torch.equal(curve.state_at(0.0)[next(iter(sa))], sa[next(iter(sa))])
    # t as a 0-dim tensor works too
    last = list(sb)[-1]
    assert torch.equal(curve.state_at(torch.tensor(1.0))[last], sb[last])


@pytest.mark.parametrize("cls,n", [(Bezier, 3), (Bezier, 4), (PolyChain, 4), (Line, 2)])
def test_untrained_curve_is_linear_interpolation(cls: type[Curve], n: int) -> None:
    a, b = make_pair(ConvBN)
    curve = cls(a, b, num_bends=n)
    sa, sb = a.state_dict(), b.state_dict()
    keys = set(curve.interpolated_keys)
    assert keys == {k for k, _ in a.named_parameters()}
    for t in torch.linspace(0, 1, 17).tolist():
        st = curve.state_at(t)
        for k in sa:
            if k in keys:
                assert torch.allclose(st[k], (1 - t) * sa[k] + t * sb[k], atol=1e-6), (k, t)
            elif t < 1.0:  # BN running stats come from endpoint A
                assert torch.equal(st[k], sa[k])


def test_forward_matches_functional_call_and_models() -> None:
    a, b = make_pair(MLPBN)
    curve = Bezier(a, b, num_bends=3).eval()
    a.eval()
    b.eval()
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(curve(x, 0.0), a(x))
        assert torch.equal(curve(x, 1.0), b(x))
        st = curve.state_at(0.4)
        full = dict(st, scale=torch.tensor(1.0))
        assert torch.allclose(curve(x, 0.4), functional_call(a, full, (x,)))
        assert torch.allclose(functional_forward(a, st, x), curve(x, 0.4))


def test_gradients_reach_only_interior_points() -> None:
    a, b = make_pair(ConvBN)
    curve = Bezier(a, b, num_bends=4)
    assert len(curve.control_parameters()) == 2 * len(curve.interpolated_keys)
    assert all(not p.requires_grad for p in curve.model.parameters())
    out = curve(torch.rand(4, 1, 8, 8), 0.3)
    out.sum().backward()
    assert all(p.grad is not None for p in curve.control_parameters())
    assert all(p.grad is None for p in curve.model.parameters())
    # the caller's models are untouched and not shared
    assert curve.model is not a
    assert all(p.grad is None for p in a.parameters())


def test_validation_names_offending_keys() -> None:
    a, _ = make_pair(ConvBN)
    wide = ConvBN(width=4)
    with pytest.raises(ValueError, match="conv.weight"):
        Bezier(a, wide)
    state_b = dict(a.state_dict())
    del state_b["bn.running_var"]
    with pytest.raises(ValueError, match="bn.running_var"):
        Bezier.from_states(a, a.state_dict(), state_b)
    with pytest.raises(ConfigError, match="different classes"):
        Bezier(a, MLPBN())
    with pytest.raises(ConfigError):
        Bezier(a, a, num_bends=1)
    with pytest.raises(ConfigError):
        Bezier(a, a).state_at(1.5)


def test_from_states_and_interpolated_keys() -> None:
    a, b = make_pair(MLPBN)
    curve = PolyChain.from_states(MLPBN(), a.state_dict(), b.state_dict(), num_bends=4)
    assert isinstance(curve, PolyChain) and curve.num_bends == 4
    assert curve.interpolated_keys == interpolated_keys(a)
    assert "net.2.running_mean" in curve.fixed_keys
    assert "net.2.weight" in curve.interpolated_keys  # BN gamma is interpolated
    mid = curve.control_point(1)
    for k in curve.interpolated_keys:
        expected = (2 / 3) * a.state_dict()[k] + (1 / 3) * b.state_dict()[k]
        assert torch.allclose(mid[k], expected, atol=1e-6)


def test_parameter_distance_hand_value() -> None:
    s1 = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0]), "skip": torch.tensor([9.0])}
    s2 = {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([5.0]), "skip": torch.tensor([0.0])}
    assert parameter_distance(s1, s2, ["w", "b"]) == pytest.approx(5.0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    a, b = make_pair(ConvBN)
    curve = Bezier(a, b, num_bends=4, metadata={"pair": [0, 1], "note": "x"})
    with torch.no_grad():
        for p in curve.control_parameters():
            p.add_(torch.randn_like(p))
    path = curve.save(tmp_path / "sub" / "curve.safetensors")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    header = Curve.read_header(path)
    assert header["family"] == "bezier" and header["num_bends"] == 4
    assert header["metadata"] == {"pair": [0, 1], "note": "x"}
    assert header["keys"] == list(a.state_dict())

    loaded = Curve.load(path, model=ConvBN())
    assert isinstance(loaded, Bezier) and loaded.num_bends == 4
    assert loaded.metadata == {"pair": [0, 1], "note": "x"}
    for t in (0.0, 0.3, 0.5, 1.0):
        s, r = curve.state_at(t), loaded.state_at(t)
        for k in s:
            assert torch.equal(s[k], r[k]), (t, k)
    with pytest.raises(CheckpointError):
        PolyChain.load(path, model=ConvBN())
    with pytest.raises(CheckpointError, match="pass the architecture"):
        Curve.load(path)
    with pytest.raises(CheckpointError):
        Curve.load(path, model=MLPBN())
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        Curve.load(tmp_path / "junk.safetensors", model=ConvBN())


def test_fused_combination_matches_the_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    controls = [[torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)] for _ in range(3)]
    coeffs = [0.25, 0.5, 0.25]
    got = fused_combination(controls, coeffs)
    for i in range(2):
        ref = controls[0][i] * coeffs[0] + controls[1][i] * coeffs[1] + controls[2][i] * coeffs[2]
        assert torch.equal(got[i], ref)
    leaf = controls[1][0].clone().requires_grad_(True)
    out = fused_combination([[controls[0][0]], [leaf], [controls[2][0]]], coeffs)[0]
    out.sum().backward()
    assert leaf.grad is not None and torch.allclose(leaf.grad, torch.full_like(leaf, 0.5))
    with pytest.raises(ValueError):
        fused_combination(controls, [1.0])


def test_state_at_is_the_coefficient_sum_bit_for_bit() -> None:
    a, b = make_pair(MLPBN)
    curve = Bezier(a, b, num_bends=4)
    with torch.no_grad():
        for plist in curve.bends:
            for p in plist:
                p.add_(torch.randn_like(p) * 0.1)
    for t in (0.1, 0.5, 0.83):
        c = curve._coefficients(t)
        st = curve.state_at(t)
        for i, key in enumerate(curve.interpolated_keys):
            ref = curve._bend_tensor(0, i) * c[0]
            for k in range(1, curve.num_bends):
                ref = ref + curve._bend_tensor(k, i) * c[k]
            assert torch.equal(st[key], ref), key
