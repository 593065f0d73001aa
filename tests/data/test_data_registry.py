"""The dataset registry: one row per dataset, aliases, user-registered rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neuralign.data import DatasetSpec, dataset_spec, list_datasets, load_dataset, registry
from neuralign.data.datasets import to_dataset
from neuralign.errors import DataError


def test_every_alias_resolves_to_its_row() -> None:
    for row in registry._REGISTRY.values():
        for alias in (row.name, *row.aliases, row.name.upper()):
            assert dataset_spec(alias) is row
    assert dataset_spec("synthetic:size=8").name == "synthetic"
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        dataset_spec("nope")
    with pytest.raises(DataError, match="unknown dataset 'mnist:x'"):
        dataset_spec("mnist:x")  # only option rows take a colon


def test_a_registered_row_is_loadable_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))

    def loader(spec: DatasetSpec, name: str, split: str, data_dir: object, dl: bool):  # type: ignore[no-untyped-def]
        n = 6 if split == "train" else 3
        images = np.full((n, 1, 4, 4), 7, dtype=np.uint8)
        return to_dataset(images, np.arange(n) % 2, name, 2, spec.classes, spec.stats)  # type: ignore[arg-type]

    row = DatasetSpec(
        name="twos",
        description="two classes of constant images",
        shape=(1, 4, 4),
        num_classes=2,
        loader=loader,
        aliases=("two-s",),
        stats=((0.5,), (0.1,)),
        classes=("even", "odd"),
    )
    registry.register_dataset(row)
    ds = load_dataset("TWO-S", "test")
    assert ds.name == "twos" and len(ds) == 3 and ds.classes == ["even", "odd"]
    assert ds.labels.tolist() == [0, 1, 0] and ds.mean == (0.5,)
    assert [i.name for i in list_datasets()][-1] == "twos"
    with pytest.raises(DataError, match="already registered"):
        registry.register_dataset(dataclasses.replace(row, name="other", aliases=("mnist",)))
    with pytest.raises(DataError, match="already registered"):
        registry.register_dataset(row)
    registry.register_dataset(dataclasses.replace(row, description="new"), replace=True)
    assert dataset_spec("twos").description == "new"
