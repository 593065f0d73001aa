"""Contract tests parametrised over every registered model (tiny variants)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.fx
from torch import nn

from neuralign.models import create_model, list_models, model_spec, split_logits, tiny_kwargs

MODELS = list_models()
SHAPES = [(1, 28), (3, 32), (3, 64)]  # (channels, side)


def _build(name: str, in_channels: int = 3, side: int = 32, **extra: Any) -> nn.Module:
    kwargs = tiny_kwargs(name)
    if "image_size" in model_spec(create_model(name, **kwargs))["kwargs"]:
        kwargs["image_size"] = side  # the MLP's first layer depends on the image size
    kwargs.update(extra)
    return create_model(name, num_classes=5, in_channels=in_channels, **kwargs)


def _has_aux(model: nn.Module) -> bool:
    return bool(getattr(model, "aux_logits", False))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("channels", "side"), SHAPES)
def test_output_shapes(name: str, channels: int, side: int) -> None:
    torch.manual_seed(0)
    model = _build(name, channels, side)
    x = torch.rand(2, channels, side, side)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
    model.train()
    out = model(x)
    logits, aux = split_logits(out)
    assert logits.shape == (2, 5)
    if _has_aux(model):
        assert isinstance(out, tuple) and len(aux) == 2
        assert all(a.shape == (2, 5) for a in aux)
    else:
        assert isinstance(out, torch.Tensor) and aux == []
    assert torch.isfinite(logits).all()


def test_googlenet_without_aux_heads() -> None:
    model = _build("googlenet", aux_logits=False).train()
    out = model(torch.rand(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
    assert not any(k.startswith("aux") for k in model.state_dict())


def test_googlenet_aux_heads_can_be_switched_off() -> None:
    model = _build("googlenet").train()
    setattr(model, "aux_logits", False)  # noqa: B010 (nn.Module typing)
    out = model(torch.rand(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_has_no_normalisation(name: str) -> None:
    """Normalisation happens inside forward, with the given statistics, but is not state."""
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    torch.manual_seed(0)
    model = _build(name, mean=mean, std=std).eval()
    x = torch.rand(2, 3, 32, 32)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), expected)
    assert not any("normalize" in k for k in model.state_dict())
    # the same weights under other statistics: identical state dict, different function
    torch.manual_seed(0)
    other = _build(name, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    other.load_state_dict(model.state_dict())
    assert other.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        out, out_other = split_logits(model(x))[0], split_logits(other(x))[0]
        assert torch.allclose(out, split_logits(other(expected))[0], atol=1e-5)
    assert not torch.allclose(out, out_other)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("training", [True, False])
def test_fx_symbolic_trace(name: str, training: bool) -> None:
    torch.manual_seed(0)
    model = _build(name, 3, 16).train(training)
    traced = torch.fx.symbolic_trace(copy.deepcopy(model))
    x = torch.rand(2, 3, 16, 16)
    torch.manual_seed(1)  # same dropout masks in both calls
    expected = model(x)
    torch.manual_seed(1)
    actual = traced(x)
    exp_logits, exp_aux = split_logits(expected)
    act_logits, act_aux = split_logits(actual)
    torch.testing.assert_close(act_logits, exp_logits, rtol=0, atol=0)
    assert len(act_aux) == len(exp_aux)
    for a, e in zip(act_aux, exp_aux):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_init_is_deterministic_under_manual_seed(name: str) -> None:
    torch.manual_seed(123)
    a = _build(name).state_dict()
    torch.manual_seed(123)
    b = _build(name).state_dict()
    torch.manual_seed(124)
    c = _build(name).state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tinyten_parameter_count() -> None:
    # Hand count, conv k*k*cin*cout + cout (bias) + 2*cout (BN affine):
    #   3->16 3x3: 432+16+32 = 480        16->16 3x3: 2304+16+32 = 2352
    #   16->32 3x3: 4608+32+64 = 4704     32->32 3x3 (x2): 2 * (9216+32+64) = 18624
    #   32->64 3x3: 18432+64+128 = 18624  64->64 3x3: 36864+64+128 = 37056
    #   64->64 1x1: 4096+64+128 = 4288    Linear 64->10: 640+10 = 650
    #   total = 86,778 (the paper's 0.09M)
    assert _count(create_model("tinyten")) == 86_778


def test_resnet32_parameter_count() -> None:
    # stem 464; stage 1: 5 * 4,672; stage 2: 14,528 + 4 * 18,560; stage 3: 57,728 + 4 * 73,984;
    # fc 650 -> 466,906 (the paper's 0.47M)
    assert _count(create_model("resnet32")) == 466_906


def test_googlenet_parameter_count_and_forward() -> None:
    model = create_model("googlenet", num_classes=100)
    total = _count(model)
    aux = sum(p.numel() for k, p in model.named_parameters() if k.startswith("aux"))
    # The paper's 10.24M (CIFAR-100) counts the two auxiliary heads.
    assert total == 10_237_388
    assert round(total / 1e6, 2) == 10.24
    assert total - aux == 5_702_404
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 100)


@pytest.mark.parametrize(
    ("name", "count"),
    [("resnet20", 272_474), ("resnet56", 855_770), ("vgg11", 9_228_362), ("mlp", 1_735_178)],
)
def test_other_parameter_counts(name: str, count: int) -> None:
    assert _count(create_model(name)) == count


@pytest.mark.parametrize("name", MODELS)
def test_tiny_variant_is_small(name: str) -> None:
    assert _count(_build(name)) < 200_000
