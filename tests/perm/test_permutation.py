"""Permutation algebra, files, spec validation and the apply functions."""

from __future__ import annotations

import pytest
import torch
from perm_models import make

from neuralign.perm import (
    AxisMember,
    Permutation,
    PermutationError,
    PermutationSpec,
    SpecError,
    apply_permutation,
    apply_soft_permutation,
    discover_spec,
    format_spec_table,
)


@pytest.fixture(scope="module")
def spec_and_state() -> tuple[PermutationSpec, dict[str, torch.Tensor]]:
    model, x = make("concat")
    return discover_spec(model, x, verify=False), model.state_dict()


def test_apply_convention_new_unit_i_is_old_perm_i() -> None:
    spec = PermutationSpec.from_axes({"g": [("w", 0), ("v", 1, 2, 2)]}, sizes={"g": 3})
    state = {"w": torch.tensor([10.0, 11.0, 12.0]), "v": torch.arange(8.0)[None, :]}
    perm = Permutation({"g": [2, 0, 1]})
    out = apply_permutation(state, spec, perm)
    assert out["w"].tolist() == [12.0, 10.0, 11.0]
    # v: indices 0,1 untouched; units own (2,3), (4,5), (6,7)
    assert out["v"][0].tolist() == [0.0, 1.0, 6.0, 7.0, 2.0, 3.0, 4.0, 5.0]
    assert state["w"].tolist() == [10.0, 11.0, 12.0]  # input not mutated
    soft = apply_soft_permutation(state, spec, perm.matrices())
    assert torch.equal(soft["v"], out["v"]) and torch.equal(soft["w"], out["w"])


def test_compose_convention(spec_and_state) -> None:
    spec, state = spec_and_state
    p, q = Permutation.random(spec, seed=1), Permutation.random(spec, seed=2)
    once = apply_permutation(state, spec, p.compose(q))
    twice = apply_permutation(apply_permutation(state, spec, q), spec, p)
    for k in state:
        assert torch.equal(once[k], twice[k])
    assert p.compose(p.inverse()) == Permutation.identity(spec)
    assert Permutation.identity(spec).is_identity()
    assert not p.is_identity()


def test_random_is_reproducible_and_equality(spec_and_state) -> None:
    spec, _ = spec_and_state
    assert Permutation.random(spec, seed=5) == Permutation.random(spec, seed=5)
    assert Permutation.random(spec, seed=5) != Permutation.random(spec, seed=6)
    assert Permutation.random(spec, seed=5) != "x"


def test_save_load(spec_and_state, tmp_path) -> None:
    spec, _ = spec_and_state
    p = Permutation.random(spec, seed=0)
    p.save(tmp_path / "p.json")
    assert Permutation.load(tmp_path / "p.json") == p
    assert list(tmp_path.iterdir()) == [tmp_path / "p.json"]  # no temp file left
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PermutationError):
        Permutation.load(tmp_path / "bad.json")


def test_invalid_permutations(spec_and_state) -> None:
    spec, state = spec_and_state
    with pytest.raises(PermutationError, match="not a permutation"):
        Permutation({"g": [0, 0, 1]})
    name = next(iter(spec.groups))
    with pytest.raises(PermutationError, match="spec says"):
        apply_permutation(state, spec, Permutation({name: [0]}))
    with pytest.raises(PermutationError, match="not in the spec"):
        apply_permutation(state, spec, Permutation({"nope": [0]}))
    with pytest.raises(PermutationError, match="matrix"):
        apply_soft_permutation(state, spec, {name: torch.eye(2)})


def test_validate(spec_and_state) -> None:
    spec, state = spec_and_state
    spec.validate(state)
    missing = {k: v for k, v in state.items() if k != "mix.weight"}
    with pytest.raises(SpecError, match="mix.weight"):
        spec.validate(missing)
    small = dict(state, **{"mix.weight": state["mix.weight"][:, :5]})
    with pytest.raises(SpecError, match="needs indices"):
        spec.validate(small)
    overlap = PermutationSpec.from_axes(
        {"a": [("w", 0)], "b": [("w", 0, 1)]}, sizes={"a": 2, "b": 2}
    )
    with pytest.raises(SpecError, match="both claim"):
        overlap.validate({"w": torch.zeros(4)})


def test_from_axes_sizes_and_errors() -> None:
    state = {"a.weight": torch.zeros(5, 3), "b.weight": torch.zeros(2, 9)}
    spec = PermutationSpec.from_axes({"a": [("a.weight", 0), ("b.weight", 1, 4)]}, state_dict=state)
    assert spec.groups["a"].size == 5
    assert spec.groups["a"].members[1] == AxisMember("b.weight", 1, 4, 1)
    with pytest.raises(SpecError):
        PermutationSpec.from_axes({"a": [("a.weight",)]}, state_dict=state)
    with pytest.raises(SpecError):
        PermutationSpec.from_axes({"a": [("a.weight", 0)]})
    with pytest.raises(SpecError):
        PermutationSpec.from_json('{"format": "other"}')


def test_table(spec_and_state) -> None:
    spec, _ = spec_and_state
    table = format_spec_table(spec, max_members=2)
    assert "... (+" in table and "mix.weight[1+3]" in format_spec_table(spec, None)
    assert table.splitlines()[-1].endswith("units")


def test_soft_permutation_is_differentiable(spec_and_state) -> None:
    spec, state = spec_and_state
    mats = {g.name: torch.eye(g.size, requires_grad=True) for g in spec}
    out = apply_soft_permutation(state, spec, mats)
    sum(v.float().sum() for v in out.values()).backward()
    assert all(m.grad is not None for m in mats.values())
    for k in state:
        torch.testing.assert_close(out[k], state[k])
