"""TensorLoader sharding: rank r's step-k batch is the r-th slice of the global batch k."""

from __future__ import annotations

import pytest
import torch

from neuralign import distributed as dist_
from neuralign.data import Augment, Dataset, TensorLoader, load_dataset


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("augment", [None, Augment(crop_padding=1, flip=True, rotation=15.0)])
def test_dist_shards_slice_the_single_process_batches(
    digits: Dataset, world: int, augment: Augment | None
) -> None:
    per_rank = 16
    single = TensorLoader(
        digits, per_rank * world, shuffle=True, augment=augment, seed=7, drop_last=True
    )
    shards = [
        TensorLoader(
            digits,
            per_rank,
            shuffle=True,
            augment=augment,
            seed=7,
            drop_last=True,
            rank=r,
            world_size=world,
        )
        for r in range(world)
    ]
    for loader in (single, *shards):
        loader.set_epoch(3)
    assert {len(s) for s in shards} == {len(single)}
    for (x, y), *pieces in zip(single, *shards, strict=True):
        assert torch.equal(x, torch.cat([p[0] for p in pieces]))
        assert torch.equal(y, torch.cat([p[1] for p in pieces]))


def test_dist_uneven_tail_is_split_without_drop_last(digits: Dataset) -> None:
    n = len(digits)
    shards = [TensorLoader(digits, 50, shuffle=True, rank=r, world_size=3) for r in range(3)]
    seen = torch.cat([s.indices() for s in shards])
    assert sorted(seen.tolist()) == list(range(n))
    assert sum(s.num_samples for s in shards) == n
    assert max(s.num_samples for s in shards) - min(s.num_samples for s in shards) <= 1


def test_dist_helpers_are_no_ops_in_one_process() -> None:
    assert not dist_.is_distributed()
    assert (dist_.rank(), dist_.world_size(), dist_.is_main()) == (0, 1, True)
    assert dist_.init_from_env() is False  # WORLD_SIZE unset
    t = torch.arange(3.0)
    assert dist_.all_reduce_(t) is t and torch.equal(t, torch.arange(3.0))
    assert dist_.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    assert dist_.on_main(lambda a, b: a + b, 2, b=3) == 5
    assert list(dist_.shard_batches(range(5), limit=3)) == [0, 1, 2]
    dist_.barrier()
