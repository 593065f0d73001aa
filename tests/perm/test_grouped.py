"""Grouped convolutions (1 < groups < channels): discovery, verification, exact invariance,
the block-diagonal member, JSON, hand-written specs, and no relaxed permutation (PAM).

Symmetry (docs/symmetry.md): output block j reads only input block j, so the input and output
groups are structured with ``groups`` blocks and share one block permutation (linked); within
each block, input and output units permute independently.
"""

from __future__ import annotations

import copy

import pytest
import torch
from grouped_models import GROUPED, make_grouped
from torch import nn

from neuralign.perm import (
    AxisMember,
    Permutation,
    PermutationError,
    PermutationSpec,
    SpecError,
    apply_permutation,
    apply_soft_permutation,
    check_soft_supported,
    discover_spec,
    permute_model,
    verify_spec,
)
from neuralign.perm.permutation import block_permutation, structured


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=sorted(GROUPED))
def grouped(request: pytest.FixtureRequest):
    model, x = make_grouped(request.param, batch=16)
    return request.param, model.eval(), x, discover_spec(model, x[:4])


def _outputs(model: nn.Module, x: torch.Tensor, train: bool) -> torch.Tensor:
    model = copy.deepcopy(model).train(train)
    with torch.no_grad():
        return model(x)


def test_discovery_links_input_and_output_blocks(grouped) -> None:
    name, model, x, spec = grouped
    expected = {
        "resnext": {
            "block1.conv1": (4, "block1.conv1"),
            "block1.conv2": (4, "block1.conv1"),
            "block2.conv1": (4, "block2.conv1"),
            "block2.conv2": (4, "block2.conv1"),
            "stem.residual": (1, None),
        },
        # a stack of grouped convs shares one block permutation; the depthwise conv with a
        # channel multiplier (groups = in = 6) gives blocks of 1 input and 2 output units
        "grouped_stack": {
            "conv0": (4, "conv0"),
            "g1": (4, "conv0"),
            "g2": (4, "conv0"),
            "up": (4, "conv0"),
            "mix": (6, "mix"),
            "dw": (6, "mix"),
        },
    }[name]
    assert {g.name: (g.blocks, g.link) for g in spec} == expected
    assert spec.meta["frozen"] == {"head": "it reaches a network output"}
    diag = {(g, str(m)) for g, m in spec.block_diagonal()}
    if name == "resnext":
        assert diag == {
            ("block1.conv1", "block1.conv2.weight[1/4]"),
            ("block2.conv1", "block2.conv2.weight[1/4]"),
        }
    else:  # the transposed conv's weight is (in, out / groups): its outputs are the diagonal
        assert diag == {("conv0", "g1.weight[1/4]"), ("g1", "g2.weight[1/4]"),
                        ("up", "up.weight[1/4]"), ("mix", "dw.weight[1/6]")}  # fmt: skip
    verify_spec(model, spec, x[:4])  # float64, train and eval


def test_random_permutation_preserves_outputs(grouped) -> None:
    name, model, x, spec = grouped
    for seed in range(3):
        perm = Permutation.random(spec, seed=seed)
        perm.check(spec)
        # the draw moves whole blocks (not only units within blocks)
        moved = [
            g.name
            for g in spec
            if g.blocks > 1
            and not torch.equal(
                block_permutation(perm.perms[g.name], g.blocks), torch.arange(g.blocks)
            )
        ]
        assert moved, seed
        permuted = permute_model(model, perm, spec)
        for train in (False, True):
            torch.testing.assert_close(
                _outputs(model, x, train), _outputs(permuted, x, train), atol=1e-5, rtol=1e-5
            )


def test_block_dependent_columns_matter(grouped) -> None:
    """Permuting the grouped conv's columns by one block's within-block order for every row
    block (a plain member) changes the function: the column order must depend on the block."""
    name, model, x, spec = grouped
    perm = Permutation.random(spec, seed=1)
    groups = {}
    for g in spec:
        members = tuple(AxisMember(m.key, m.axis) if m.row_blocks > 1 else m for m in g.members)
        groups[g.name] = g.__class__(g.name, g.size, members, g.taps, g.blocks, g.link)
    state = model.state_dict()
    good = apply_permutation(state, spec, perm)
    # a plain member cannot even hold the block-diagonal axis (it is size / blocks long)
    with pytest.raises(SpecError):
        apply_permutation(state, PermutationSpec(groups), perm)
    g, m = spec.block_diagonal()[0]
    wrong = dict(good)
    s = spec.groups[g].block_size
    p = perm.perms[g].view(-1, s) % s
    t = state[m.key].index_select(m.axis, p[0])  # block 0's order for every row block
    rows = next(
        r for r in spec.groups.values() for r2 in r.members if r2.key == m.key and r2.axis == 0
    )
    wrong[m.key] = t.index_select(0, perm.perms[rows.name])
    if not torch.equal(p, p[:1].expand_as(p)):
        b = copy.deepcopy(model)
        b.load_state_dict(wrong)
        with torch.no_grad():
            assert (b(x) - model(x)).abs().max() > 1e-3


def test_linked_block_permutations_must_agree(grouped) -> None:
    name, model, x, spec = grouped
    perm = Permutation.random(spec, seed=2)
    g = next(g for g in spec if g.link is not None and g.blocks > 1)
    s = g.block_size
    pi = torch.arange(g.blocks).roll(1)
    perms = dict(perm.perms)
    other = block_permutation(perms[g.name], g.blocks)
    if torch.equal(pi, other):
        pi = pi.roll(1)
    perms[g.name] = structured(pi, [torch.arange(s)] * g.blocks)
    with pytest.raises(PermutationError, match="linked"):
        Permutation(perms).check(spec)


def test_json_round_trip_keeps_the_block_diagonal_member(grouped) -> None:
    name, model, x, spec = grouped
    back = PermutationSpec.from_json(spec.to_json())
    assert back.equivalent(spec)
    assert back.block_diagonal() == spec.block_diagonal()
    perm = Permutation.random(spec, seed=4)
    a = apply_permutation(model.state_dict(), spec, perm)
    b = apply_permutation(model.state_dict(), back, perm)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_hand_written_spec() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.Conv2d(4, 6, 3, groups=2), nn.ReLU(), nn.Conv2d(6, 2, 1)
    )
    axes = {
        "a": [("0.weight", 0), ("0.bias", 0), ("1.weight", 1, 0, 1, 2)],
        "b": [("1.weight", 0), ("1.bias", 0), ("3.weight", 1)],
    }
    sd = model.state_dict()
    spec = PermutationSpec.from_axes(
        axes, state_dict=sd, blocks={"a": 2, "b": 2}, links={"a": "l", "b": "l"}
    )
    assert spec.sizes == {"a": 4, "b": 6}
    x = torch.randn(3, 3, 5, 5)
    verify_spec(model, spec, x)
    found = discover_spec(model, x)
    assert [set(g.members) for g in found] == [set(g.members) for g in spec]
    # the block-diagonal member needs its group linked to the group of axis 0
    with pytest.raises(SpecError, match="linked"):
        PermutationSpec.from_axes(axes, state_dict=sd, blocks={"a": 2, "b": 2})
    with pytest.raises(SpecError, match="row blocks"):
        PermutationSpec.from_axes(axes, state_dict=sd, blocks={"a": 4, "b": 2})
    bad = {**axes, "a": [("0.weight", 0), ("1.weight", 1, 1, 1, 2)]}
    with pytest.raises(SpecError, match="start 0"):
        PermutationSpec.from_axes(bad, sizes={"a": 4, "b": 6}, blocks={"a": 2, "b": 2},
                                  links={"a": "l", "b": "l"})  # fmt: skip


def test_concatenated_or_fixed_inputs_are_frozen_soundly() -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 4, 1)
            self.g = nn.Conv2d(8, 8, 3, padding=1, groups=4)  # over a concatenation
            self.first = nn.Conv2d(3, 6, 3, padding=1, groups=3)  # on the network input
            self.head = nn.Conv2d(14, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.g(torch.cat([self.a(x).relu(), self.b(x).relu()], 1)).relu()
            return self.head(torch.cat([y, self.first(x).relu()], 1)).mean((2, 3))

    x = torch.randn(4, 3, 6, 6)
    spec = discover_spec(Cat(), x)  # verified
    assert list(spec.groups) == []
    assert "several parts" in spec.meta["frozen"]["a"]


def test_no_relaxed_permutation_for_grouped_convolutions(grouped) -> None:
    name, model, x, spec = grouped
    mats = Permutation.random(spec, seed=0).matrices(torch.float64)
    diag = {g for g, _ in spec.block_diagonal()}
    with pytest.raises(PermutationError, match="grouped convolutions"):
        apply_soft_permutation(model.state_dict(), spec, mats)
    with pytest.raises(PermutationError, match="grouped convolutions"):
        check_soft_supported(spec)
    # groups not touching a grouped convolution still take relaxed matrices
    free = {g: m for g, m in mats.items() if not spec.groups[g].link}
    assert not diag & set(free)
    if free:
        apply_soft_permutation(model.state_dict(), spec, free)


def test_pam_refuses_grouped_convolutions() -> None:
    from neuralign.pamopt import pam

    model, x = make_grouped("resnext", batch=8)
    data = [(x, torch.zeros(8, dtype=torch.long))]
    with pytest.raises(PermutationError, match="grouped convolutions"):
        pam(model, copy.deepcopy(model), data, progress=False)


def test_freezing_a_grouped_conv_group_freezes_its_linked_family() -> None:
    model, x = make_grouped("resnext", batch=4)
    spec = discover_spec(model, x, freeze=["block1.conv1", "block2.conv2"])
    assert list(spec.groups) == ["stem.residual"]
    assert "linked to frozen group" in spec.meta["frozen"]["block1.conv2"]
    check_soft_supported(spec)  # nothing of a grouped convolution is left: PAM may run
