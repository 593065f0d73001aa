"""Symmetry of modern building blocks: discovery, exact invariance, planted-permutation recovery.

For every block (squeeze-excite in four spellings, channels-first and channels-last LayerNorm
with layer-scale, U-Net skips across upsampling, a flatten head, a CLS token and position
embedding, ...): discovery and its verification pass, a random permutation preserves the
outputs in train and eval mode, and both alignment methods recover a planted permutation
exactly.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from modern_models import MODERN, make_modern
from torch import nn

from neuralign.alignment import align
from neuralign.errors import UnsupportedOpError
from neuralign.perm import (
    AxisMember,
    Permutation,
    PermutationError,
    PermutationSpec,
    SpecError,
    apply_permutation,
    discover_spec,
    permute_model,
)


def _outputs(model: nn.Module, x: torch.Tensor, train: bool) -> list[torch.Tensor]:
    model = copy.deepcopy(model).train(train)
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, tuple) else [out]


@pytest.fixture(scope="module", params=sorted(MODERN))
def modern(request: pytest.FixtureRequest):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, x = make_modern(request.param, batch=48)
        return request.param, model.eval(), x, discover_spec(model, x[:4])
    finally:
        torch.set_num_threads(threads)


def test_random_permutation_preserves_outputs(modern) -> None:
    name, model, x, spec = modern
    assert len(spec) > 0
    perm = Permutation.random(spec, seed=5)
    assert not perm.is_identity()
    permuted = permute_model(model, perm, spec)
    for train in (False, True):
        for a, b in zip(_outputs(model, x, train), _outputs(permuted, x, train)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["correlation", "weight"])
def test_alignment_recovers_planted_permutation(modern, method: str) -> None:
    name, model, x, spec = modern
    perm = Permutation.random(spec, seed=7)
    b = permute_model(model, perm, spec)
    res = align(model, b, [x[:24], x[24:]], method=method, spec=spec)
    expected = perm.inverse()
    # The inner layers of a multi-layer nn.GRU/nn.LSTM are not observable (one opaque
    # module): correlation says so and keeps them; weight matching recovers everything.
    hidden = ["rnn.l0", "rnn.l0_reverse"] if name == "gru_deep" and method == "correlation" else []
    assert res.untapped == hidden
    for g in spec.groups:
        if g not in hidden:
            assert torch.equal(res.permutation.perms[g], expected.perms[g]), (name, method, g)
    with torch.no_grad():
        torch.testing.assert_close(res.aligned_b(x), model(x), atol=1e-4, rtol=1e-4)


def test_squeeze_excite_gate_is_tied_to_its_features() -> None:
    model, x = make_modern("se_none")
    spec = discover_spec(model, x)
    members = set(spec.groups["conv1.residual"].members)
    # the gate's output rows and the features it scales share one permutation
    assert AxisMember("se.fc2.weight", 0) in members
    assert AxisMember("se.fc1.weight", 1) in members
    assert AxisMember("conv2.weight", 1) in members


def test_channels_last_layernorm_and_layer_scale_are_members() -> None:
    model, x = make_modern("convnext")
    spec = discover_spec(model, x)
    stream = set(spec.groups["stem.residual"].members)
    for key, axis in [
        ("block.norm.weight", 0),
        ("block.pw1.weight", 1),
        ("block.pw2.weight", 0),
        ("block.gamma", 0),
        ("stem_norm.weight", 0),
        ("down_norm.bias", 0),
        ("block.dw.weight", 0),
    ]:
        assert AxisMember(key, axis) in stream, key
    assert AxisMember("scale", 0) in spec.groups["down"].members


def test_cls_token_and_position_embedding_follow_the_stream() -> None:
    model, x = make_modern("tokens")
    spec = discover_spec(model, x)
    (stream,) = [g for g in spec if g.size == 8]
    assert AxisMember("cls_token", 2) in stream.members
    assert AxisMember("pos_embed", 2) in stream.members
    assert AxisMember("patch.weight", 0) in stream.members


def test_unet_skip_concatenation_offsets() -> None:
    model, x = make_modern("unet")
    spec = discover_spec(model, x)
    assert AxisMember("dec2.0.weight", 1, 0) in spec.groups["mid.0"].members
    assert AxisMember("dec2.0.weight", 1, 6) in spec.groups["enc2.0"].members
    assert AxisMember("dec1.0.weight", 1, 4) in spec.groups["upconv"].members
    assert AxisMember("upconv.weight", 0) in spec.groups["dec2.0"].members  # transposed: in=0


def test_fixed_tensor_concatenated_still_freezes() -> None:
    class FixedCat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 6)
            self.fc2 = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc1(x)
            h = torch.cat([h.new_ones(h.shape[0], 1, 6), h], dim=1)
            return self.fc2(h).mean(1)

    spec = discover_spec(FixedCat(), torch.randn(2, 3, 4))
    assert "fc1" not in spec.groups
    assert spec.meta["frozen"]["fc1"].startswith("a fixed tensor is concatenated")


def test_groupnorm_groups_are_structured() -> None:
    model, x = make_modern("groupnorm")
    spec = discover_spec(model, x)
    assert spec.groups["stem.residual"].blocks == 4  # GroupNorm(4, 12): blocks of 3
    assert spec.groups["block.conv1"].blocks == 4
    assert spec.groups["side"].blocks == 1  # one whole channel group of cat_gn
    for seed in range(5):
        perm = Permutation.random(spec, seed=seed)
        perm.check(spec)  # block to block
    # a permutation splitting a block is refused, and would change the function
    bad = Permutation.identity(spec).perms
    bad["stem.residual"] = torch.tensor([1, 3, 2, 0, *range(4, 12)])
    with pytest.raises(PermutationError, match="does not map whole blocks"):
        permute_model(model, Permutation(bad), spec)
    flat = PermutationSpec({k: dataclasses.replace(g, blocks=1) for k, g in spec.groups.items()})
    unchecked = apply_permutation(model.state_dict(), flat, Permutation(bad))
    moved = copy.deepcopy(model)
    moved.load_state_dict(unchecked)
    with torch.no_grad():
        assert not torch.allclose(moved(x), model(x), atol=1e-4)


def test_groupnorm_conflicting_block_structures_freeze() -> None:
    class Clash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.gn_a = nn.GroupNorm(2, 8)
            self.gn_b = nn.GroupNorm(4, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            return self.fc((self.gn_a(h) + self.gn_b(h)).mean((2, 3)))

    spec = discover_spec(Clash(), torch.randn(2, 3, 4, 4))
    assert "conv" not in spec.groups
    assert "blocks" in spec.meta["frozen"]["conv"]


def test_structured_spec_round_trips_and_validates() -> None:
    model, x = make_modern("groupnorm")
    spec = discover_spec(model, x)
    back = PermutationSpec.from_json(spec.to_json())
    assert back.equivalent(spec)
    assert back.groups["stem.residual"].blocks == 4
    with pytest.raises(SpecError, match="do not divide"):
        PermutationSpec.from_axes({"g": [("conv.weight", 0)]}, sizes={"g": 6}, blocks={"g": 4})


@pytest.mark.parametrize("style", ["mha", "separate", "fused", "chunk"])
def test_attention_heads_are_linked_structured_groups(style: str) -> None:
    model, x = make_modern(f"vit_{style}")
    spec = discover_spec(model, x)
    prefix = "attn.0" if style in ("mha", "separate") else "attn.0.qkv"
    qk, v = spec.groups[f"{prefix}.qk"], spec.groups[f"{prefix}.v"]
    assert (qk.blocks, qk.block_size, v.blocks) == (2, 4, 2)  # 2 heads of 4 units
    assert qk.link == v.link is not None
    # one residual stream: patch embedding, CLS token, position embedding, every block's
    # attention and MLP output projection, every LayerNorm
    stream = {m.key for m in spec.groups["patch.residual"].members}
    out = "attn.1.out_proj.weight" if style == "mha" else "attn.1.proj.weight"
    for key in ("cls_token", "pos_embed", "n1.1.weight", "fc2.1.weight", "norm.bias", out):
        assert key in stream, key
    assert {"fc1.0", "fc1.1"} <= set(spec.groups)  # MLP hidden units, one group per block
    if style == "mha":  # the correlation taps project the block input with q/k/v weights
        assert {t.proj_start for t in qk.taps if t.mode == "eval"} == {0, 8}
        assert {t.proj for t in v.taps} == {"attn.0.in_proj_weight"}
    for seed in range(4):
        Permutation.random(spec, seed=seed).check(spec)  # heads move together
    # a permutation moving heads in q/k but not in v is refused
    bad = Permutation.random(spec, seed=0).perms
    bad[v.name] = torch.arange(v.size)
    bad[qk.name] = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    with pytest.raises(PermutationError, match="linked"):
        Permutation(bad).check(spec)


def test_per_head_attention_weights_freeze_the_heads() -> None:
    class Returns(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.out = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            y, w = self.attn(h, h, h, average_attn_weights=False)
            return self.out(y).sum(1) + w.sum((1, 2, 3))[:, None]

    spec = discover_spec(Returns(), torch.randn(2, 3, 4))
    assert "attn.qk" not in spec.groups
    assert "per-head attention weights" in spec.meta["frozen"]["attn.qk"]


def test_recurrent_gate_blocks_are_members() -> None:
    model, x = make_modern("lstm")
    spec = discover_spec(model, x)
    members = set(spec.groups["rnn.l0"].members)
    for gate in range(4):  # i, f, g, o
        for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            assert AxisMember(f"rnn.{key}", 0, gate * 5) in members
    assert AxisMember("rnn.weight_hh_l0", 1) in members
    assert AxisMember("head.weight", 1) in members
    assert AxisMember("rnn.weight_ih_l0", 1) in spec.groups["emb"].members
    deep, _ = make_modern("gru_deep")
    spec = discover_spec(deep, x)
    assert AxisMember("rnn.weight_ih_l1", 1, 5) in spec.groups["rnn.l0_reverse"].members


def test_recurrent_refusals_are_clear() -> None:
    class Stateful(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Linear(4, 6)
            self.rnn = nn.GRU(6, 5, num_layers=2, batch_first=True)
            self.head = nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, h = self.rnn(self.emb(x))
            return self.head(h[-1])

    with pytest.raises(UnsupportedOpError, match="h_n of a multi-layer"):
        discover_spec(Stateful(), torch.randn(2, 3, 4))
