"""align: coverage in the result, typed errors instead of silent identities, derived taps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuralign.alignment import align
from neuralign.perm import Permutation, PermutationSpec, SpecError, discover_spec, permute_model


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc1 = nn.Linear(6 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def _model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    m = _Net()
    with torch.no_grad():
        m.bn.weight.uniform_(0.5, 1.5)
        m.bn.bias.uniform_(0.0, 0.5)
    return m.eval(), torch.randn(40, 3, 8, 8)


def _hand_spec() -> PermutationSpec:
    return PermutationSpec.from_axes(
        {
            "conv": [
                ("conv.weight", 0),
                ("conv.bias", 0),
                ("bn.weight", 0),
                ("bn.bias", 0),
                ("bn.running_mean", 0),
                ("bn.running_var", 0),
                ("fc1.weight", 1, 0, 16),
            ],
            "fc1": [("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)],
        },
        sizes={"conv": 6, "fc1": 8},
    )


def test_hand_written_spec_correlation_derives_taps_and_recovers() -> None:
    m, x = _model()
    spec = _hand_spec()
    assert spec.equivalent(discover_spec(m, x[:2]))
    perm = Permutation.random(spec, seed=2)
    b = permute_model(m, perm)
    res = align(m, b, [x], spec=spec)  # default method: correlation
    assert res.untapped == []
    assert res.permutation == perm.inverse()
    assert set(res.correlation_after) == {"conv", "fc1"}
    assert res.correlation_after["conv"] == pytest.approx(1.0, abs=1e-3)


def test_result_reports_coverage() -> None:
    m, x = _model()
    res = align(m, m, [x], method="weight")
    assert res.coverage is not None
    assert (res.coverage.groups, res.coverage.units) == (2, 14)
    assert "fc2" in res.coverage.frozen  # the logits
    assert res.permutation.spec is res.spec


def test_empty_spec_is_a_typed_error() -> None:
    m, x = _model()
    with pytest.raises(SpecError, match="nothing to align"):
        align(m, m, [x], method="weight", spec=PermutationSpec({}))


def test_spec_without_taps_or_producers_is_a_typed_error() -> None:
    m, x = _model()
    spec = PermutationSpec.from_axes({"odd": [("bn.weight", 0), ("bn.bias", 0)]}, sizes={"odd": 6})
    with pytest.raises(SpecError, match="needs activation taps"):
        align(m, m, [x], spec=spec)
