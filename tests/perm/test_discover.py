"""Discovery on awkward hand-made models: soundness, structure, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from perm_models import AWKWARD, ResNet, ShuffleNet, SortNet, make
from torch import nn

from neuralign.errors import ConfigError, SpecVerificationError, UnsupportedOpError
from neuralign.perm import (
    AxisMember,
    Group,
    Permutation,
    PermutationSpec,
    apply_permutation,
    apply_soft_permutation,
    discover_spec,
    permute_model,
    verify_spec,
)


def _outputs(model: nn.Module, x: torch.Tensor, train: bool) -> list[torch.Tensor]:
    model = copy.deepcopy(model).train(train)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, tuple) else [out]


@pytest.fixture(scope="module", params=sorted(AWKWARD))
def case(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.Tensor, PermutationSpec]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, x = make(request.param)
        return request.param, model, x, discover_spec(model, x)
    finally:
        torch.set_num_threads(threads)


def test_random_permutation_preserves_outputs(case) -> None:
    name, model, x, spec = case
    assert len(spec) > 0
    perm = Permutation.random(spec, seed=3)
    permuted = permute_model(model, perm, spec)
    for train in (False, True):
        for a, b in zip(_outputs(model, x, train), _outputs(permuted, x, train)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    changed = [
        k for k, v in model.state_dict().items() if not torch.equal(v, permuted.state_dict()[k])
    ]
    assert changed, "the permutation changed no weight"


def test_compose_inverse_is_identity(case) -> None:
    _, model, _, spec = case
    p = Permutation.random(spec, seed=1)
    assert p.compose(p.inverse()).is_identity()
    assert p.inverse().compose(p).is_identity()
    state = model.state_dict()
    back = apply_permutation(apply_permutation(state, spec, p), spec, p.inverse())
    for k, v in state.items():
        assert torch.equal(v, back[k]), k


def test_json_round_trip(case, tmp_path) -> None:
    _, _, _, spec = case
    again = PermutationSpec.from_json(spec.to_json())
    assert again == spec
    spec.save(tmp_path / "spec.json")
    assert PermutationSpec.load(tmp_path / "spec.json") == spec
    assert str(spec).splitlines()[0].startswith("group")


def test_soft_one_hot_equals_hard(case) -> None:
    _, model, _, spec = case
    p = Permutation.random(spec, seed=2)
    state = model.state_dict()
    hard = apply_permutation(state, spec, p)
    soft = apply_soft_permutation(state, spec, p.matrices(torch.float64))
    for k in state:
        if state[k].is_floating_point():
            torch.testing.assert_close(soft[k], hard[k], atol=1e-6, rtol=0)
        else:
            assert torch.equal(soft[k], hard[k])


def test_discovery_does_not_touch_model(case) -> None:
    name, model, x, _ = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    discover_spec(model, x)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_resnet_structure() -> None:
    model, x = make("resnet")
    spec = discover_spec(model, x)
    # stem+stage1 stream, stage2 stream (projection separates them), one per block inner.
    assert sorted(spec.sizes.values()) == [4, 4, 4, 8, 8, 8]
    streams = [g for g in spec if g.name.endswith(".residual")]
    assert [g.size for g in streams] == [4, 8]
    keys = {m.key for m in streams[1].members}
    assert "stage2.0.short.0.weight" in keys and "stage2.0.conv2.weight" in keys
    assert AxisMember("fc.weight", 1) in streams[1].members
    assert "fc.bias" not in spec.state_keys()  # logits are never permuted


def test_concat_offsets_and_flatten_inner() -> None:
    model, x = make("concat")
    spec = discover_spec(model, x)
    mix = {m for g in spec for m in g.members if m.key == "mix.weight" and m.axis == 1}
    assert {(m.start, m.inner) for m in mix} == {(0, 1), (3, 1), (8, 1)}
    fc = {(m.start, m.inner) for g in spec for m in g.members if m.key == "fc.weight"}
    assert fc == {(0, 4), (24, 4)}
    # b1 is called twice: one group, whose output feeds two consumers
    b1 = spec.groups["b1.0"]
    assert AxisMember("fc.weight", 1, 24, 4) in b1.members


def test_shared_layer_ties_groups() -> None:
    model, x = make("shared")
    spec = discover_spec(model, x)
    assert len(spec) == 1
    (g,) = spec
    assert {m.key for m in g.members} >= {"stem.weight", "shared.weight", "head.weight"}


def test_depthwise_passes_group() -> None:
    model, x = make("depthwise")
    spec = discover_spec(model, x)
    g = spec.groups["pw1"]
    assert AxisMember("dw.weight", 0) in g.members and AxisMember("scale", 0) in g.members
    assert AxisMember("pw2.weight", 1) in g.members


def test_aux_head_groups_are_covered() -> None:
    model, x = make("aux")
    spec = discover_spec(model, x)
    assert "aux.0" in spec.groups  # exists only in train mode
    assert AxisMember("aux.0.weight", 1) in spec.groups["conv"].members
    assert AxisMember("aux.3.weight", 1, 0, 64) in spec.groups["aux.0"].members
    eval_only = discover_spec(model, x, modes=("eval",), verify=False)
    assert "aux.0" not in eval_only.groups
    # the eval-only spec is wrong in train mode, and verification says so
    with pytest.raises(SpecVerificationError, match="'conv'"):
        verify_spec(model, eval_only, x, modes=("train",))


def test_hand_written_spec_equals_discovered() -> None:
    model, x = make("mlp")
    spec = discover_spec(model, x)
    hand = PermutationSpec.from_axes(
        {
            "fc1": [
                ("fc1.weight", 0),
                ("fc1.bias", 0),
                ("norm.weight", 0),
                ("norm.bias", 0),
                ("fc2.weight", 1),
            ],
            "fc2": [("fc2.weight", 0), ("fc2.bias", 0), ("out.weight", 1)],
        },
        state_dict=model.state_dict(),
    )
    assert hand.equivalent(spec)
    verify_spec(model, hand, x)


def test_verify_names_broken_group() -> None:
    model, x = make("resnet")
    spec = discover_spec(model, x)
    victim = "stage1.0.conv1"
    g = spec.groups[victim]
    broken = dict(spec.groups)
    broken[victim] = Group(g.name, g.size, tuple(m for m in g.members if m.axis != 1), g.taps)
    with pytest.raises(SpecVerificationError, match=victim):
        verify_spec(model, PermutationSpec(broken), x)
    # dropping a BN running statistic is caught in eval mode
    broken[victim] = Group(
        g.name, g.size, tuple(m for m in g.members if "running_var" not in m.key), g.taps
    )
    with pytest.raises(SpecVerificationError, match=victim):
        verify_spec(model, PermutationSpec(broken), x, modes=("eval",))


def test_unsupported_sort_names_node_and_ways_out() -> None:
    torch.manual_seed(0)
    model, x = SortNet(), torch.randn(2, 3, 8, 8)
    with pytest.raises(UnsupportedOpError) as info:
        discover_spec(model, x)
    msg = str(info.value)
    assert "%sort = torch.sort(%relu, dim=1)" in msg
    assert "freeze=['conv1']" in msg and "leaf_modules" in msg and "from_axes" in msg
    spec = discover_spec(model, x, freeze=["conv1"])
    assert list(spec.groups) == ["conv2"]


def test_unsupported_channel_shuffle() -> None:
    torch.manual_seed(0)
    model, x = ShuffleNet(), torch.randn(2, 3, 4, 4)
    with pytest.raises(UnsupportedOpError, match=r"%reshape = Tensor\.reshape.*channel shuffle"):
        discover_spec(model, x)
    with pytest.raises(UnsupportedOpError, match="leaf_modules=\\['block'\\]"):
        discover_spec(model, x)
    spec = discover_spec(model, x, leaf_modules=["block"])
    assert list(spec.groups) == []  # stem feeds the leaf, block output is fixed
    spec = discover_spec(model, x, freeze=["stem"])
    assert list(spec.groups) == ["block.conv"]


def test_groupnorm() -> None:
    class GN(nn.Module):
        def __init__(self, groups: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.gn = nn.GroupNorm(groups, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.gn(self.conv(x)).relu().mean((2, 3)))

    x = torch.randn(2, 3, 6, 6)
    spec = discover_spec(GN(1), x)
    assert AxisMember("gn.weight", 0) in spec.groups["conv"].members
    spec = discover_spec(GN(2), x)  # 2 channel groups: a structured group of 2 blocks
    assert (spec.groups["conv"].blocks, spec.groups["conv"].block_size) == (2, 2)


def test_grouped_conv_is_a_linked_structured_pair() -> None:
    # groups=2: input and output channels in 2 blocks sharing one block permutation
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.Conv2d(4, 6, 3, groups=2), nn.ReLU(), nn.Conv2d(6, 2, 1)
    )
    spec = discover_spec(model, torch.randn(2, 3, 5, 5))
    a, b = spec.groups["0"], spec.groups["1"]
    assert (a.blocks, b.blocks) == (2, 2) and a.link == b.link is not None
    assert AxisMember("1.weight", 1, 0, 1, 2) in a.members
    assert AxisMember("1.weight", 0) in b.members


def test_unknown_freeze_name() -> None:
    model, x = make("mlp")
    with pytest.raises(ConfigError, match="unknown groups"):
        discover_spec(model, x, freeze=["nope"])


def test_bad_mode() -> None:
    model, x = make("mlp")
    with pytest.raises(ConfigError):
        discover_spec(model, x, modes=("test",))


def test_input_added_to_hidden_freezes_it() -> None:
    class AddInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.conv2 = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x)) + x  # the input is never permuted
            return self.fc(self.conv2(h).relu().mean((2, 3)))

    spec = discover_spec(AddInput(), torch.randn(2, 3, 4, 4))
    assert list(spec.groups) == ["conv2"]


def test_group_order_is_topological() -> None:
    spec = discover_spec(ResNet(), torch.randn(2, 3, 8, 8))
    names = list(spec.groups)
    assert names.index("stage1.0.conv1") < names.index("stage2.0.conv1")
    assert names[0] == "stage1.residual"


def test_functional_dropout_in_train_mode() -> None:
    import torch.nn.functional as F

    class Drop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)
            self.drop = nn.Dropout2d(0.5)
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.drop(F.relu(self.conv(x)))
            h = F.dropout(h.mean((2, 3)), 0.5, self.training)
            return self.fc(h)

    dropout = F.dropout
    spec = discover_spec(Drop(), torch.randn(4, 3, 4, 4))  # verified in train mode too
    assert list(spec.groups) == ["conv"]
    assert F.dropout is dropout
