"""Tests of the model registry, model specs, Normalize and split_logits."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from neuralign.errors import ConfigError, NeuralignError
from neuralign.models import (
    Normalize,
    create_model,
    list_models,
    model_spec,
    register_model,
    split_logits,
    tiny_kwargs,
)

EXPECTED = {"googlenet", "mlp", "resnet20", "resnet32", "resnet56", "tinyten", "vgg11", "vgg16"}


def test_list_models_contains_the_zoo() -> None:
    names = list_models()
    assert names == sorted(names)
    assert set(names) >= EXPECTED


def test_unknown_model_names_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="resnet32") as info:
        create_model("resnet33")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, NeuralignError)


def test_name_is_case_insensitive() -> None:
    assert model_spec(create_model("TinyTen", width=0.25))["name"] == "tinyten"


def test_unknown_kwarg_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown argument.*depth.*accepted.*width"):
        create_model("tinyten", depth=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "width"),
        ({"width": -1.0}, "width"),
        ({"num_classes": 0}, "num_classes"),
        ({"mean": [0.5, 0.5]}, "in_channels=3"),
        ({"std": [0.5, 0.0, 0.5]}, "positive"),
        ({"width": object()}, "JSON"),
    ],
)
def test_invalid_values_raise_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_model("tinyten", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_is_complete_and_json_serialisable(name: str) -> None:
    model = create_model(name, num_classes=7, in_channels=1, **tiny_kwargs(name))
    spec = model_spec(model)
    assert spec["name"] == name
    kwargs = spec["kwargs"]
    assert kwargs["num_classes"] == 7
    assert kwargs["in_channels"] == 1
    assert kwargs["mean"] == [0.5] and kwargs["std"] == [0.5]
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = create_model(**json.loads(json.dumps(spec)))
    assert model_spec(rebuilt) == spec
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


def test_spec_is_a_copy() -> None:
    model = create_model("tinyten", width=0.25)
    model_spec(model)["kwargs"]["width"] = 99.0
    assert model_spec(model)["kwargs"]["width"] == 0.25


def test_spec_kwargs_merge_and_conflicts() -> None:
    spec = model_spec(create_model("resnet20", num_classes=5, width=0.25))
    assert model_spec(create_model(**spec)) == spec
    with pytest.raises(ConfigError, match="num_classes"):
        create_model(spec["name"], num_classes=6, kwargs=spec["kwargs"])
    with pytest.raises(ConfigError, match="width"):
        create_model(spec["name"], kwargs=spec["kwargs"], width=0.5)


def test_model_spec_of_foreign_module() -> None:
    with pytest.raises(ConfigError, match="create_model"):
        model_spec(nn.Linear(2, 2))


def test_register_model_rejects_a_taken_name() -> None:
    def impostor(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Linear(in_channels, num_classes)

    with pytest.raises(ConfigError, match="already registered"):
        register_model("tinyten")(impostor)


def test_register_and_create_a_user_model() -> None:
    @register_model("_test_linear")
    def _test_linear(
        num_classes: int = 10, in_channels: int = 3, *, bias: bool = True
    ) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 4, num_classes, bias=bias))

    model = create_model("_test_linear", num_classes=2, in_channels=1, bias=False)
    assert model_spec(model) == {
        "name": "_test_linear",
        "kwargs": {"num_classes": 2, "in_channels": 1, "bias": False},
    }
    assert model(torch.rand(3, 1, 2, 2)).shape == (3, 2)


def test_normalize_values_and_state() -> None:
    norm = Normalize([0.25, 0.5], [0.5, 0.25])
    x = torch.rand(2, 2, 3, 3)
    expected = torch.stack([(x[:, 0] - 0.25) / 0.5, (x[:, 1] - 0.5) / 0.25], 1)
    torch.testing.assert_close(norm(x), expected)
    assert norm.state_dict() == {}
    assert norm.double().mean.dtype == torch.float64


def test_custom_mean_std_change_the_output() -> None:
    torch.manual_seed(0)
    a = create_model("tinyten", width=0.25).eval()
    torch.manual_seed(0)
    b = create_model("tinyten", width=0.25, mean=(0.4, 0.5, 0.6), std=0.2).eval()
    x = torch.rand(2, 3, 16, 16)
    assert not torch.allclose(a(x), b(x))
    assert model_spec(b)["kwargs"]["std"] == [0.2, 0.2, 0.2]


def test_functional_call_strict_with_state_dict() -> None:
    model = create_model("resnet20", width=0.25).eval()
    x = torch.rand(2, 3, 16, 16)
    out = torch.func.functional_call(model, model.state_dict(), (x,), strict=True)
    torch.testing.assert_close(out, model(x))


def test_split_logits() -> None:
    t = torch.zeros(2, 3)
    logits, aux = split_logits(t)
    assert logits is t and aux == []
    a1, a2 = torch.ones(2, 3), torch.full((2, 3), 2.0)
    logits, aux = split_logits((t, a1, a2))
    assert logits is t and aux[0] is a1 and aux[1] is a2
    with pytest.raises(TypeError):
        split_logits(())
    with pytest.raises(TypeError):
        split_logits("logits")  # type: ignore[arg-type]
