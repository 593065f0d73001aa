"""Nothing partial in silence: coverage reports, typed errors naming what to do."""

from __future__ import annotations

import logging

import pytest
import torch
from modern_models import make_modern
from torch import nn

from neuralign.errors import UnsupportedOpError
from neuralign.perm import (
    Permutation,
    PermutationError,
    coverage,
    discover_spec,
    permute_model,
)


class _Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow
            return self.fc(x)
        return x


class _ControlFlow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.blocks = nn.Sequential(nn.Linear(4, 4), _Gate())
        self.o = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.blocks(self.a(x)))


class _Sorter(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=-1).values


class _ManySorters(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        self.sort = nn.ModuleList(_Sorter() for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fc, sort in zip(self.fc, self.sort):
            x = sort(fc(x))
        return x


class _BilinearFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bil = nn.Bilinear(4, 4, 5)
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bil(x, x)))


def test_control_flow_error_names_the_submodule() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        discover_spec(_ControlFlow(), torch.randn(2, 4))
    msg = str(info.value)
    assert "'blocks.1' (_Gate)" in msg and "leaf_modules=['blocks.1']" in msg
    spec = discover_spec(_ControlFlow(), torch.randn(2, 4), leaf_modules=[_Gate])
    assert list(spec.groups) == ["a"]
    assert spec.meta["frozen"]["blocks.0"] == "input of leaf blocks.1"


def test_suggestion_names_the_class_when_instances_fail_alike() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        discover_spec(_ManySorters(), torch.randn(2, 4))
    msg = str(info.value)
    assert "leaf_modules=[_Sorter]" in msg and "all 3 instances" in msg


def test_coverage_reports_frozen_groups_and_unpermuted_parameters(caplog) -> None:
    model = _ControlFlow()
    with caplog.at_level(logging.INFO, logger="neuralign.perm.trace"):
        spec = discover_spec(model, torch.randn(2, 4), leaf_modules=["blocks.1"])
    cov = coverage(spec, model)
    assert (cov.groups, cov.units) == (1, 4)
    assert cov.frozen["blocks.0"] == "input of leaf blocks.1"
    assert cov.frozen["o"] == "it reaches a network output"
    assert "blocks.1.fc.weight" in cov.unpermuted and "o.bias" in cov.unpermuted
    assert "a.weight" not in cov.unpermuted
    text = caplog.text
    assert "coverage: 1 groups, 4 units" in text and "blocks.0: input of leaf" in text


def test_zero_groups_is_said_loudly(caplog) -> None:
    model = _BilinearFirst()
    with caplog.at_level(logging.WARNING, logger="neuralign.perm.trace"):
        spec = discover_spec(model, torch.randn(2, 4))
    cov = coverage(spec, model)
    assert cov.empty and cov.opaque == {"bil": "Bilinear"}
    assert "no symmetry rule for Bilinear (bil)" in str(cov)
    assert "discovered no permutation groups" in caplog.text
    assert "no symmetry rule for Bilinear" in caplog.text


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_layers_never_give_zero_groups(cls: type[nn.Module]) -> None:
    class First(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cls(4, 5, batch_first=True)
            self.fc = nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.rnn(x)[0][:, -1])

    spec = discover_spec(First(), torch.randn(2, 3, 4))
    assert list(spec.groups) == ["rnn.l0"]


def test_permute_model_without_spec_uses_the_permutations_spec() -> None:
    model, x = make_modern("se_none")
    spec = discover_spec(model, x)
    perm = Permutation.random(spec, seed=1)
    a = permute_model(model, perm)
    b = permute_model(model, perm, spec)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert permute_model(model, perm.inverse().compose(perm)).state_dict().keys()
    other = discover_spec(*make_modern("flatten_head"))
    with pytest.raises(PermutationError, match="not the spec the permutation was made for"):
        permute_model(model, perm, other)


@pytest.mark.parametrize("arch", ["vit", "convnext"])
def test_spec_command_prints_coverage(arch: str, tmp_path, capsys) -> None:
    from neuralign.cli import main
    from neuralign.io import save_checkpoint
    from neuralign.models import create_model, tiny_kwargs

    path = save_checkpoint(tmp_path / "m.safetensors", create_model(arch, **tiny_kwargs(arch)))
    assert main(["spec", str(path)]) == 0
    out = capsys.readouterr().out
    assert "coverage:" in out and "head: it reaches a network output" in out
    if arch == "vit":
        assert "blocks.0.attn.qkv.qk" in out and "=4x" in out  # heads as blocks
