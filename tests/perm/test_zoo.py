"""Discovery on every model of the zoo (tiny variants; ResNet20 also at full width)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neuralign.perm import Permutation, capture_activations, discover_spec, permute_model

models = pytest.importorskip("neuralign.models", reason="the model zoo is not available")


def _input(name: str) -> torch.Tensor:
    return torch.rand(4, 1, 28, 28) if name == "mlp" else torch.rand(4, 3, 32, 32)


def _create(name: str, **kw: object) -> nn.Module:
    in_ch = 1 if name == "mlp" else 3
    torch.manual_seed(0)
    return models.create_model(name, num_classes=10, in_channels=in_ch, **kw)


def _run(model: nn.Module, x: torch.Tensor, train: bool) -> list[torch.Tensor]:
    model = copy.deepcopy(model).train(train)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("name", models.list_models())
def test_zoo_permutation_preserves_outputs(name: str) -> None:
    model = _create(name, **models.tiny_kwargs(name))
    x = _input(name)
    spec = discover_spec(model, x)  # verified in train and eval mode (float64)
    assert len(spec) > 0
    permuted = permute_model(model, Permutation.random(spec, seed=1), spec)
    for train in (False, True):
        ref, out = _run(model, x, train), _run(permuted, x, train)
        assert len(ref) == len(out)
        for a, b in zip(ref, out):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    model.eval()
    acts = capture_activations(model, spec, x)
    for g, tensors in acts.items():
        assert all(t.shape[:2] == (4, spec.groups[g].size) for t in tensors)


def test_googlenet_aux_heads_are_covered() -> None:
    model = _create("googlenet", **models.tiny_kwargs("googlenet"))
    spec = discover_spec(model, _input("googlenet"), verify=False)
    keys = spec.state_keys()
    aux_keys = {k for k, _ in model.named_parameters() if k.startswith("aux")}
    assert aux_keys, "googlenet has no aux parameters?"
    permuted_aux = {k for k in keys if k.startswith("aux")}
    # every aux weight except the logits layer's output rows is permuted
    assert {k for k in aux_keys if k.endswith(".weight") and "fc2" not in k} <= permuted_aux
    assert sum(1 for name in spec.groups if name.startswith("aux")) == 4


def test_resnet20_groups_match_hand_count() -> None:
    model = _create("resnet20")
    spec = discover_spec(model, torch.rand(2, 3, 32, 32))
    assert len(spec) == 12
    streams = [g.size for g in spec if g.name.endswith("residual")]
    assert streams == [16, 32, 64]
    inner = sorted(g.size for g in spec if not g.name.endswith("residual"))
    assert inner == [16] * 3 + [32] * 3 + [64] * 3
    # the stream taps: stem output + 3 block outputs (stage 1), 3 block outputs later
    assert [len([t for t in g.taps if t.mode == "eval"]) for g in spec if "residual" in g.name] == [
        4,
        3,
        3,
    ]
