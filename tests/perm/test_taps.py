"""Activation taps: shapes, equivariance under permutation, pre-activation, modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from perm_models import AWKWARD, make

from neuralign.perm import (
    ActivationTap,
    Permutation,
    SpecError,
    capture_activations,
    discover_spec,
    permute_model,
)


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_taps_follow_the_permutation(name: str) -> None:
    model, x = make(name)
    model.eval()
    spec = discover_spec(model, x, verify=False)
    perm = Permutation.random(spec, seed=4)
    permuted = permute_model(model, perm, spec)
    acts = capture_activations(model, spec, x)
    acts_p = capture_activations(permuted, spec, x)
    assert acts.keys() == acts_p.keys()
    assert acts, "no taps"
    for g, tensors in acts.items():
        for a, b in zip(tensors, acts_p[g]):
            assert a.shape[0] == x.shape[0] and a.shape[1] == spec.groups[g].size
            torch.testing.assert_close(b, a.index_select(1, perm.perms[g]))


def test_resnet_taps_are_post_relu_stream_members() -> None:
    model, x = make("resnet")
    spec = discover_spec(model, x, verify=False)
    stream = spec.groups["stage1.residual"]
    eval_taps = [t for t in stream.taps if t.mode == "eval"]
    # the stem output and the two block outputs, all after their final ReLU
    assert len(eval_taps) == 3
    model.eval()
    post = capture_activations(model, spec, x, groups=["stage1.residual"])
    pre = capture_activations(model, spec, x, groups=["stage1.residual"], pre_activation=True)
    for a, b in zip(post["stage1.residual"], pre["stage1.residual"]):
        torch.testing.assert_close(a, F.relu(b))
        assert (b < 0).any()


def test_tap_object_reusable_and_mode_dependent() -> None:
    model, x = make("aux")
    spec = discover_spec(model, x, verify=False)
    tap = ActivationTap(model, spec)
    model.eval()
    first = tap(x)
    assert "aux.0" not in first and "conv" in first
    second = tap(x * 2)
    assert not torch.equal(first["conv"][0], second["conv"][0])
    model.train()
    train = tap(x)
    assert "aux.0" in train and train["aux.0"][0].shape == (4, 4, 8, 8)
    assert model.training
    with torch.no_grad():  # the tap sees the live parameters
        model.conv.weight.mul_(2)
    model.eval()
    assert not torch.equal(tap(x)["conv"][0], first["conv"][0])


def test_tap_errors() -> None:
    model, x = make("mlp")
    spec = discover_spec(model, x, verify=False)
    with pytest.raises(SpecError, match="unknown groups"):
        ActivationTap(model, spec, groups=["nope"])
    other, _ = make("resnet")
    with pytest.raises(SpecError, match="not nodes"):
        capture_activations(other, spec, torch.randn(2, 3, 8, 8))
