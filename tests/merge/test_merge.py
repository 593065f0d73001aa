"""Merging on real data (scikit-learn's digits): aligned merges beat the naive average."""

from __future__ import annotations

import copy

import pytest
import torch

import neuralign as na
from neuralign.errors import ConfigError, ModelMismatchError
from neuralign.merge import average_states, merge


@pytest.fixture(scope="module")
def digits() -> tuple[na.Dataset, na.Dataset]:
    pytest.importorskip("sklearn")
    return na.load_dataset("digits", "train"), na.load_dataset("digits", "test")


@pytest.fixture(scope="module")
def mlps(digits: tuple[na.Dataset, na.Dataset]) -> list[torch.nn.Module]:
    train, _ = digits
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = na.create_model(
            "mlp",
            num_classes=10,
            in_channels=1,
            image_size=8,
            hidden=[64, 64],
            mean=list(train.mean),
            std=list(train.std),
        )
        cfg = na.TrainConfig(epochs=10, batch_size=64, lr=0.05, augment=False, seed=seed)
        na.train_model(m, train, None, cfg, progress=False, device="cpu")
        models.append(m.eval())
    return models


def test_average_states_means_floats_and_keeps_integers() -> None:
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
    out = average_states([a, b])
    assert out["w"].tolist() == [2.0, 4.0] and int(out["n"]) == 5
    assert average_states([a, b], weights=[3, 1])["w"].tolist() == [1.5, 3.5]


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method", ["correlation", "weight"])
def test_merge_beats_the_naive_average(
    digits: tuple[na.Dataset, na.Dataset], mlps: list[torch.nn.Module], k: int, method: str
) -> None:
    train, test = digits
    before = [copy.deepcopy(m.state_dict()) for m in mlps[:k]]
    res = merge(mlps[:k], train, method, test_data=test, repair_stats=True, subset_fraction=0.5)
    names = [r["model"] for r in res.evaluation]
    assert names == [f"endpoint {i}" for i in range(k)] + [
        "naive average",
        "merged",
        "merged + REPAIR",
    ]
    naive = res.accuracy("naive average")
    assert res.accuracy("merged") > naive + 2.0
    assert res.accuracy("merged + REPAIR") > naive + 2.0
    # REPAIR corrected the two hidden Linear layers (no BatchNorm in the MLP).
    assert res.repair is not None and len(res.repair.corrected) == 2 and not res.repair.skipped
    # The inputs are untouched; the first model keeps its units.
    for m, s in zip(mlps, before):
        assert all(torch.equal(v, m.state_dict()[key]) for key, v in s.items())
    assert res.permutations[0].is_identity() and len(res.permutations) == k
    if k == 2:
        assert res.rounds == 0


def test_merged_weights_are_the_average_of_the_aligned_models(
    digits: tuple[na.Dataset, na.Dataset], mlps: list[torch.nn.Module]
) -> None:
    train, _ = digits
    res = merge(mlps[:2], train, "weight")
    spec = na.discover_spec(mlps[1], torch.rand(2, 1, 8, 8))
    aligned_b = na.apply_permutation(mlps[1].state_dict(), spec, res.permutations[1])
    for key, v in res.model.state_dict().items():
        assert torch.allclose(v, (mlps[0].state_dict()[key] + aligned_b[key]) / 2, atol=1e-6)


def test_repair_matches_the_endpoint_statistics(
    digits: tuple[na.Dataset, na.Dataset], mlps: list[torch.nn.Module]
) -> None:
    from neuralign.data import TensorLoader
    from neuralign.merge.repair import _moments

    train, _ = digits
    res = merge(mlps[:2], train, "weight", repair_stats=True, bn_subset=len(train))
    spec = na.discover_spec(mlps[0], torch.rand(2, 1, 8, 8))
    loader = TensorLoader(train, batch_size=500)
    aligned = [mlps[0], copy.deepcopy(mlps[1])]
    aligned[1].load_state_dict(
        na.apply_permutation(mlps[1].state_dict(), spec, res.permutations[1])
    )
    first = next(iter(spec.groups))  # the first hidden layer: earlier layers are unchanged
    ((mean, std),) = _moments(res.model, spec, first, loader)
    goal = [_moments(m, spec, first, loader)[0] for m in aligned]
    assert torch.allclose(mean, (goal[0][0] + goal[1][0]) / 2, atol=1e-4)
    assert torch.allclose(std, (goal[0][1] + goal[1][1]) / 2, atol=1e-4)


def test_merge_errors(digits: tuple[na.Dataset, na.Dataset], mlps: list[torch.nn.Module]) -> None:
    train, _ = digits
    with pytest.raises(ConfigError, match="at least two"):
        merge(mlps[:1], train)
    with pytest.raises(ConfigError, match="unknown merge method"):
        merge(mlps[:2], train, "average")
    other = na.create_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=[32, 64])
    with pytest.raises(ModelMismatchError):
        merge([mlps[0], other], train)
