"""Batched augmentation and the tensor loader."""

from __future__ import annotations

import pytest
import torch

from neuralign.data import Augment, Dataset, TensorLoader
from neuralign.data.loader import derive_seed, random_crop, rotate
from neuralign.errors import DataError


def _indexed_dataset(n: int = 103, classes: int = 5) -> Dataset:
    """Sample i has every pixel equal to i (so a batch tells which samples it holds)."""
    imgs = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 2, 2).clone()
    return Dataset(imgs, torch.arange(n) % classes, classes, "idx", (0.5,), (0.25,))


def _ids(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0] * 255).round().long().tolist()


def _batch(n: int = 16, c: int = 3, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_derive_seed_is_stable_and_mixes() -> None:
    assert derive_seed(0, 0) == derive_seed(0, 0)
    assert len({derive_seed(s, e) for s in range(5) for e in range(5)}) == 25
    assert 0 <= derive_seed(2**70, -1) < 2**63


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_augment_preserves_shape_and_dtype(dtype: torch.dtype) -> None:
    x = (_batch() * 255).to(dtype) if dtype == torch.uint8 else _batch()
    y = Augment()(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == dtype


def test_augment_is_deterministic_given_generator() -> None:
    x = _batch()
    a = Augment()(x, torch.Generator().manual_seed(5))
    b = Augment()(x, torch.Generator().manual_seed(5))
    c = Augment()(x, torch.Generator().manual_seed(6))
    assert a.equal(b) and not a.equal(c)


def test_identity_settings() -> None:
    x = _batch()
    assert Augment(crop_padding=0, flip=False, rotation=0)(x).equal(x)
    assert random_crop(x, 0, torch.zeros(16, 2, dtype=torch.long)).equal(x)
    # Centre offset (= padding) is the identity crop.
    assert random_crop(x, 3, torch.full((16, 2), 3)).equal(x)
    torch.testing.assert_close(rotate(x, torch.zeros(16)), x, atol=1e-5, rtol=0)


def test_crop_matches_explicit_window() -> None:
    x = _batch(n=6, h=8, w=10)
    offsets = torch.randint(0, 7, (6, 2), generator=torch.Generator().manual_seed(0))
    out = random_crop(x, 3, offsets)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert out[i].equal(padded[i, :, dy : dy + 8, dx : dx + 10])


def test_flip_only_equals_torch_flip_on_flipped_samples() -> None:
    x = _batch(n=64)
    out = Augment(crop_padding=0, flip=True, rotation=0)(x, torch.Generator().manual_seed(3))
    # The flip mask is the first draw of the generator (documented order).
    mask = torch.rand(64, generator=torch.Generator().manual_seed(3)) < 0.5
    assert 0 < int(mask.sum()) < 64
    assert out[mask].equal(torch.flip(x[mask], dims=[3]))
    assert out[~mask].equal(x[~mask])


def test_rotation_by_90_degrees_is_rot90() -> None:
    x = _batch(n=4, h=9, w=9)
    out = rotate(x, torch.full((4,), 90.0))
    torch.testing.assert_close(out, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_per_sample_randomness() -> None:
    x = _batch(n=1).expand(32, -1, -1, -1).contiguous()
    out = Augment()(x, torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    distinct = {tuple(r.tolist()) for r in flat.round(decimals=4)}
    assert len(distinct) == 32


def test_augment_rejects_bad_input() -> None:
    with pytest.raises(DataError):
        Augment(crop_padding=-1)
    with pytest.raises(DataError, match="batch"):
        Augment()(torch.zeros(3, 8, 8))


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_covers_each_sample_once(drop_last: bool) -> None:
    ds = _indexed_dataset()
    loader = TensorLoader(ds, batch_size=10, shuffle=True, seed=1, drop_last=drop_last)
    assert loader.dataset is ds
    assert len(loader) == (10 if drop_last else 11)
    seen: list[int] = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        ids = _ids(x)
        assert y.tolist() == [i % 5 for i in ids]
        seen += ids
    assert sum(1 for _ in loader) == len(loader)
    if drop_last:
        assert len(seen) == 100 and len(set(seen)) == 100
    else:
        assert sorted(seen) == list(range(103))
    assert seen != sorted(seen)


def test_loader_order_deterministic_per_seed_and_epoch() -> None:
    ds = _indexed_dataset()

    def run(seed: int, epoch: int) -> list[torch.Tensor]:
        loader = TensorLoader(ds, 16, shuffle=True, augment=Augment(1, True, 10.0), seed=seed)
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    a, b = run(0, 2), run(0, 2)
    assert all(u.equal(v) for u, v in zip(a, b))
    assert not all(u.equal(v) for u, v in zip(a, run(0, 3)))
    assert not all(u.equal(v) for u, v in zip(a, run(1, 2)))
    plain = TensorLoader(ds, 16)
    assert _ids(torch.cat([x for x, _ in plain])) == list(range(103))


def test_loader_shards_are_disjoint_and_cover() -> None:
    ds = _indexed_dataset()
    world = 3
    shards = []
    for rank in range(world):
        loader = TensorLoader(ds, 8, shuffle=True, seed=4, rank=rank, world_size=world)
        loader.set_epoch(7)
        shards.append([i for x, _ in loader for i in _ids(x)])
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(103))
    assert [len(s) for s in shards] == [35, 34, 34]
    even = [
        TensorLoader(ds, 8, shuffle=True, drop_last=True, rank=r, world_size=world)
        for r in range(world)
    ]
    assert len({len(lo) for lo in even}) == 1 and len({lo.num_samples for lo in even}) == 1
    idx = [set(lo.indices().tolist()) for lo in even]
    assert not (idx[0] & idx[1]) and not (idx[1] & idx[2]) and not (idx[0] & idx[2])
    with pytest.raises(DataError, match="rank"):
        TensorLoader(ds, 8, rank=3, world_size=3)


def test_loader_applies_augment_to_float_batch() -> None:
    imgs = torch.randint(
        0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    ds = Dataset(imgs, torch.zeros(20, dtype=torch.int64), 2, "r", (0.5,) * 3, (0.2,) * 3)
    flip_all = Augment(crop_padding=0, flip=False, rotation=0)
    x, _ = next(iter(TensorLoader(ds, 20, augment=flip_all)))
    torch.testing.assert_close(x, imgs.float() / 255)
    x2, _ = next(iter(TensorLoader(ds, 20, augment=Augment())))
    assert x2.shape == x.shape and not x2.equal(x)


@pytest.mark.gpu
def test_loader_on_cuda_matches_cpu() -> None:
    ds = _indexed_dataset()
    cpu = TensorLoader(ds, 16, shuffle=True, augment=Augment(1, True, 10.0), seed=3)
    gpu = TensorLoader(ds, 16, shuffle=True, augment=Augment(1, True, 10.0), seed=3, device="cuda")
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and yg.is_cuda
        assert yc.equal(yg.cpu())
        torch.testing.assert_close(xc, xg.cpu(), atol=1e-4, rtol=0)


def test_fused_affine_augment_equals_sequential_composition() -> None:
    from neuralign.data.loader import affine_augment, random_crop, random_flip, rotate

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 12, 12, generator=gen)
    offsets = torch.randint(0, 5, (16, 2), generator=gen)
    flips = torch.rand(16, generator=gen) < 0.5
    zero = torch.zeros(16, dtype=torch.float64)
    # no rotation: exactly the integer crop and the flip
    fused = affine_augment(x, 2, offsets, flips, zero)
    torch.testing.assert_close(
        fused, random_flip(random_crop(x, 2, offsets), flips), atol=1e-5, rtol=0
    )
    # with rotation: the same as rotating the cropped, flipped image, away from the borders
    angles = torch.full((16,), 9.0, dtype=torch.float64)
    seq = rotate(random_flip(random_crop(x, 2, offsets), flips), angles)
    fused = affine_augment(x, 2, offsets, flips, angles)
    inner = (slice(None), slice(None), slice(4, 8), slice(4, 8))
    torch.testing.assert_close(fused[inner], seq[inner], atol=1e-4, rtol=0)
