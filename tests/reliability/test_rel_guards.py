"""Divergence guards, model-pair checks and NaN-aware path metrics (issue 19, classes 1-2)."""

from __future__ import annotations

import math

import pytest
import torch

from neuralign.checks import check_compatible_models, check_finite_loss, check_finite_state
from neuralign.errors import ConfigError, DivergedError, ModelMismatchError
from neuralign.models import create_model
from neuralign.paths import PathResult


def _mlp(hidden: list[int], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("mlp", in_channels=1, image_size=8, hidden=hidden, num_classes=10)


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_loss(bad: float) -> None:
    with pytest.raises(DivergedError, match=r"curve training diverged at epoch 3 \(loss"):
        check_finite_loss(bad, "curve training", epoch=3)
    with pytest.raises(ConfigError):  # a ConfigError too, like the endpoint trainer's
        check_finite_loss(torch.tensor([1.0, bad]), "psi-step")
    check_finite_loss(1.5)
    check_finite_loss(torch.tensor([0.0, 2.0]))


def test_check_finite_state_names_entries() -> None:
    m = _mlp([16])
    check_finite_state(m)
    with torch.no_grad():
        m.layers[0].weight[0, 0] = float("nan")  # type: ignore[index]
    name = next(k for k, v in m.state_dict().items() if not torch.isfinite(v).all())
    with pytest.raises(DivergedError, match=name):
        check_finite_state(m, "curve training", epoch=1)


# ---------------------------------------------------------------- model pairs


def test_compatible_models_first_mismatch() -> None:
    a, deeper, wider = _mlp([16]), _mlp([16, 16]), _mlp([32])
    check_compatible_models([a, _mlp([16], seed=1)])
    with pytest.raises(ModelMismatchError, match="model B has entries model A lacks"):
        check_compatible_models([a, deeper])
    with pytest.raises(ModelMismatchError, match=r"shape \(16, 64\) in model A, \(32, 64\)"):
        check_compatible_models([a, wider])
    half = {k: v.half() for k, v in a.state_dict().items()}
    with pytest.raises(ModelMismatchError, match="dtype torch.float32 in A, torch.float16 in B"):
        check_compatible_models([a.state_dict(), half], ["A", "B"])


def test_align_refuses_deeper_and_wider_b() -> None:
    """Before: a deeper B aligned "successfully"; a wider B gave an untyped RuntimeError."""
    from neuralign.alignment import align

    x = torch.rand(40, 1, 8, 8)
    y = torch.arange(40) % 10
    batches = [(x, y)]
    a = _mlp([16])
    for b, msg in ((_mlp([16, 16], 1), "not the same architecture"), (_mlp([32], 1), "shape")):
        for method in ("correlation", "weight"):
            with pytest.raises(ModelMismatchError, match=f"align: .*{msg}"):
                align(a, b, batches, method=method)
    res = align(a, _mlp([16], 1), batches)  # a matching pair still aligns
    assert set(res.permutation.perms)


def test_pam_and_curves_refuse_mismatched_pairs() -> None:
    from neuralign.curves import Bezier
    from neuralign.pamopt import pam

    a, deeper = _mlp([16]), _mlp([16, 16], 1)
    batches = [(torch.rand(20, 1, 8, 8), torch.arange(20) % 10)]
    with pytest.raises(ModelMismatchError, match="pam: "):
        pam(a, deeper, batches, progress=False)
    with pytest.raises(ModelMismatchError, match="endpoint B"):
        Bezier(a, deeper)
    with pytest.raises(ValueError, match="layers"):  # still a ValueError for old callers
        Bezier.from_states(a, a.state_dict(), _mlp([32]).state_dict())


def test_spec_mismatch_is_named() -> None:
    from neuralign.perm import PermutationSpec, discover_spec

    a = _mlp([16])
    spec = discover_spec(a, torch.rand(2, 1, 8, 8))
    check_compatible_models([a, _mlp([16], 1)], spec=spec)
    other = PermutationSpec.from_axes({"g": [("nope.weight", 0)]}, sizes={"g": 4})
    with pytest.raises(ModelMismatchError, match="model A does not fit the permutation spec"):
        check_compatible_models([a, _mlp([16], 1)], spec=other)


# ---------------------------------------------------------------- NaN-aware metrics


def _path(losses: list[float], accs: list[float]) -> PathResult:
    ts = [i / (len(losses) - 1) for i in range(len(losses))]
    return PathResult(ts=ts, test_loss=losses, test_acc=accs)


@pytest.mark.parametrize("where", [0, 2, 4])
def test_nan_anywhere_makes_every_metric_nan(where: int) -> None:
    """Before: max()/min() skipped the NaN depending on its position -> "barrier 0.0000"."""
    losses = [0.1, 0.2, 0.3, 0.2, 0.1]
    accs = [98.0, 97.0, 96.0, 97.0, 98.0]
    losses[where] = float("nan")
    accs[where] = float("nan")
    r = _path(losses, accs)
    assert not r.finite and r.non_finite() == {
        "test_loss": [r.ts[where]],
        "test_acc": [r.ts[where]],
    }
    for key, value in r.summary().items():
        # the endpoint mean only looks at t=0 and t=1: finite unless they are NaN
        if key.endswith("_endpoint") and where not in (0, 4):
            assert math.isfinite(value), key
        else:
            assert math.isnan(value), key
    assert math.isnan(r.loss_barrier) and math.isnan(r.min_accuracy) and math.isnan(r.max_loss)
    again = PathResult.from_json(r.to_json())  # NaN survives the JSON round trip
    assert math.isnan(again.loss_barrier)


def test_inf_and_nan_distances() -> None:
    r = _path([0.1, float("inf"), 0.1], [90.0, 10.0, 90.0])
    assert r.max_loss == math.inf and r.loss_barrier == math.inf and not r.finite
    d = PathResult(
        ts=[0, 0.5, 1], test_loss=[0.1, 0.2, 0.1], test_acc=[9, 9, 9], distances=[1.0, float("nan")]
    )
    assert math.isnan(d.avg_loss) and "distances" in d.non_finite()
    assert _path([0.1, 0.3, 0.1], [90.0, 80.0, 90.0]).finite


def test_evaluate_state_nan_weights_give_nan_accuracy() -> None:
    from neuralign.paths.evaluate import evaluate_state

    m = _mlp([16])
    sd = {k: torch.full_like(v, float("nan")) for k, v in m.state_dict().items()}
    loss, acc = evaluate_state(
        m, sd, [(torch.rand(10, 1, 8, 8), torch.zeros(10, dtype=torch.long))]
    )
    assert math.isnan(loss) and math.isnan(acc)  # before: acc 100.0 (argmax of NaN is 0)
