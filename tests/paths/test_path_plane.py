"""Loss plane through the endpoints and the midpoint of a curve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nets_testlib import Batches, ConvBN, make_pair
from neuralign.curves import Bezier, Line, parameter_distance
from neuralign.paths import PlaneResult, evaluate_plane


def _data(n: int = 64, seed: int = 0) -> Batches:
    gen = torch.Generator().manual_seed(seed)
    return Batches(
        torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen), 32
    )


def test_plane_of_a_quadratic_curve(tmp_path: Path) -> None:
    a, b = make_pair(ConvBN)
    curve = Bezier(a, b)
    with torch.no_grad():
        for p in curve.control_parameters():
            p.add_(0.3 * torch.randn_like(p))
    plane = evaluate_plane(
        curve, _data(), grid=(4, 3), bn_data=_data(seed=1), curve_ts=11, progress=False
    )
    dist = parameter_distance(a.state_dict(), b.state_dict(), curve.interpolated_keys)
    assert plane.points["theta_a"] == pytest.approx([0.0, 0.0], abs=1e-9)
    assert plane.points["theta_b"][0] == pytest.approx(dist, rel=1e-6)
    assert plane.points["theta_b"][1] == pytest.approx(0.0, abs=1e-6)
    assert plane.points["bend1"][1] > 0 and not plane.random_direction
    # a quadratic Bezier curve lies in the plane of its control points
    assert plane.off_plane < 1e-4 * dist
    assert plane.curve_xy[0] == pytest.approx([0.0, 0.0], abs=1e-5)
    assert len(plane.xs) == 4 and len(plane.ys) == 3
    assert len(plane.test_loss) == 3 and all(len(row) == 4 for row in plane.test_loss)
    assert min(plane.xs) < 0 < dist < max(plane.xs)
    assert all(0.0 <= v <= 100.0 for row in plane.test_acc for v in row)
    again = PlaneResult.load(plane.save(tmp_path / "plane.json"))
    assert again == plane


def test_plane_of_a_line_uses_a_random_direction() -> None:
    a, b = make_pair(ConvBN)
    plane = evaluate_plane(
        Line(a, b), _data(), grid=(3, 3), bn_mode="none", curve_ts=5, progress=False
    )
    assert plane.random_direction and plane.bn_mode == "none"
    assert all(abs(y) < 1e-6 for _, y in plane.curve_xy)
    with pytest.warns(UserWarning, match="random second direction"):
        evaluate_plane(Bezier(a, b), _data(), grid=(2, 2), bn_mode="none", progress=False)
