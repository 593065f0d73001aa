"""Alignment of networks with grouped convolutions: both methods recover a planted
permutation exactly (block permutation shared by a grouped conv's input and output groups,
independent within-block permutations); weight matching between different networks returns
a valid structured permutation and never lowers its objective."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perm"))
from grouped_models import GROUPED, make_grouped  # noqa: E402

from neuralign.alignment import align  # noqa: E402
from neuralign.alignment.weight_matching import weight_matching  # noqa: E402
from neuralign.perm import (  # noqa: E402
    Permutation,
    PermutationSpec,
    apply_permutation,
    discover_spec,
    permute_model,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", sorted(GROUPED))
@pytest.mark.parametrize("method", ["correlation", "weight"])
def test_recovers_planted_permutation(name: str, method: str) -> None:
    model, x = make_grouped(name, batch=48)
    model.eval()
    spec = discover_spec(model, x[:4])
    for seed in (7, 8):
        perm = Permutation.random(spec, seed=seed)
        b = permute_model(model, perm, spec)
        res = align(model, b, [x[:24], x[24:]], method=method, spec=spec)
        assert res.untapped == []
        expected = perm.inverse()
        for g in spec.groups:
            assert torch.equal(res.permutation.perms[g], expected.perms[g]), (name, method, g)
        with torch.no_grad():
            torch.testing.assert_close(res.aligned_b(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_correlation_with_derived_taps(name: str) -> None:
    """A hand-written spec (no taps): taps derived at the producer layers, grouped convs
    included."""
    model, x = make_grouped(name, batch=48)
    model.eval()
    spec = discover_spec(model, x[:4])
    data = spec.to_dict()
    for g in data["groups"]:
        g["taps"] = []
    bare = PermutationSpec.from_dict(data)
    perm = Permutation.random(spec, seed=3)
    b = permute_model(model, perm, spec)
    res = align(model, b, [x], method="correlation", spec=bare)
    assert res.permutation == perm.inverse()


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_weight_matching_between_different_networks(name: str) -> None:
    a, _ = make_grouped(name, seed=0)
    b, _ = make_grouped(name, seed=1)
    x = torch.randn(2, *GROUPED[name][1])
    spec = discover_spec(a, x)
    perms, objective = weight_matching(a.state_dict(), b.state_dict(), spec, seed=0)
    Permutation(perms).check(spec)  # block to block, linked groups alike
    assert all(o2 >= o1 - 1e-9 * abs(o1) for o1, o2 in zip(objective, objective[1:]))

    def total(p: Permutation) -> float:
        """The weight inner product weight matching maximises."""
        sa, sb = a.state_dict(), apply_permutation(b.state_dict(), spec, p)
        return sum(float((sa[k].double() * sb[k].double()).sum()) for k, _ in a.named_parameters())

    assert total(Permutation(perms)) > total(Permutation.identity(spec))
