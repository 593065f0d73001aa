"""The data recipes shared by the CLI and the pipeline (data/recipes.py)."""

from __future__ import annotations

import pytest
import torch

from neuralign.data import (
    Augment,
    Dataset,
    alignment_subset,
    balanced_subset,
    bn_loader,
    bn_subset,
    default_augment,
    make_loader,
)
from neuralign.data.recipes import shard_batch_size
from neuralign.errors import ConfigError


def _data(n: int = 120, channels: int = 3, size: int = 32, classes: int = 4) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        images=torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
        labels=torch.arange(n) % classes,
        num_classes=classes,
        name="toy",
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


def test_default_augment_scales_with_the_image_and_flips_only_rgb() -> None:
    rgb = default_augment(_data(channels=3, size=32))
    assert (rgb.crop_padding, rgb.flip, rgb.rotation) == (4, True, 15.0)  # the paper's CIFAR
    grey = default_augment(_data(channels=1, size=28))
    assert (grey.crop_padding, grey.flip) == (3, False)  # a mirrored digit is another symbol
    assert default_augment(_data(size=6)).crop_padding == 1  # never 0 (= no crop)


def test_make_loader_augments_shuffles_and_is_deterministic() -> None:
    ds = _data()
    plain = make_loader(ds, 40)
    x_plain, y_plain = next(iter(plain))
    assert torch.equal(x_plain, ds.images[:40].float() / 255) and torch.equal(
        y_plain, ds.labels[:40]
    )
    aug = make_loader(ds, 40, shuffle=True, augment=True, seed=3)
    assert isinstance(aug.augment, Augment)
    (x1, y1), (x2, y2) = (
        next(iter(aug)),
        next(iter(make_loader(ds, 40, shuffle=True, augment=True, seed=3))),
    )
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # same seed, same batches
    assert not torch.equal(y1, y_plain)  # shuffled
    custom = Augment(crop_padding=0, flip=False, rotation=0.0)
    assert make_loader(ds, 8, augment=custom).augment is custom
    assert make_loader(ds, 8, augment=False).augment is None


def test_sharding_splits_the_global_batch_or_refuses() -> None:
    assert shard_batch_size(128, 4) == 32
    assert shard_batch_size(7, 1) == 7
    with pytest.raises(ConfigError, match="divisible by the number of processes 4"):
        shard_batch_size(130, 4)
    # without a process group, shard=True is the plain loader
    loader = make_loader(_data(), 30, shard=True)
    assert (loader.batch_size, loader.world_size, loader.rank, loader.drop_last) == (
        30,
        1,
        0,
        False,
    )


def test_alignment_subset_size_fraction_or_whole() -> None:
    ds = _data(n=120)
    assert len(alignment_subset(ds, size=40, seed=1)) == 40
    assert len(alignment_subset(ds, size=10_000)) == 120  # at most the split
    frac = alignment_subset(ds, fraction=0.2, seed=1)
    assert len(frac) == 24
    assert torch.equal(frac.labels.bincount(), torch.full((4,), 6))  # class-balanced
    assert torch.equal(frac.images, balanced_subset(ds, fraction=0.2, seed=1).images)
    assert alignment_subset(ds, fraction=1.0) is ds


def test_bn_loader_modes() -> None:
    ds = _data(n=120)
    assert bn_loader(ds, "none", subset=10, batch_size=8) is None
    sub = bn_loader(ds, "train-subset", subset=40, batch_size=16, seed=0)
    assert sub is not None and not sub.shuffle and sub.augment is None
    assert torch.equal(sub.dataset.images, bn_subset(ds, 40, seed=0).images)
    # the BN subset is drawn with seed + 1: not the subset other stages draw with seed
    assert torch.equal(bn_subset(ds, 40, seed=0).images, balanced_subset(ds, n=40, seed=1).images)
    full = bn_loader(ds, "train-full-augmented", subset=40, batch_size=16, seed=2)
    assert full is not None and full.shuffle and isinstance(full.augment, Augment)
    assert full.num_samples == 120 and full.seed == 2
    with pytest.raises(ConfigError, match="unknown bn_mode"):
        bn_loader(ds, "running", subset=40, batch_size=16)
