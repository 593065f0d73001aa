"""A loader over an in-memory :class:`~neuralign.data.Dataset`, with batched augmentation.

The whole uint8 dataset is moved to the device once; each batch is gathered with one index
operation, converted to float32 in [0, 1], and augmented with tensor operations on the whole
batch (no per-sample Python). All randomness comes from :class:`torch.Generator` objects
seeded from ``(seed, epoch, rank)``, drawn on the CPU, so a given seed and epoch give the same
batches on every device.

Paper preprocessing (Tatro et al. 2020, CIFAR): random 32×32 crop of the image padded by 4,
random horizontal flip, random rotation in ±15°; that is ``Augment()``'s default.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

from neuralign.data.datasets import Dataset
from neuralign.errors import DataError

__all__ = [
    "Augment",
    "AugmentParams",
    "TensorLoader",
    "derive_seed",
    "random_crop",
    "random_flip",
    "rotate",
]

_MASK64 = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (SplitMix64 finaliser; stable across runs).

    Python's ``hash()`` is salted per process for strings and so must not be used for seeds.

    Args:
        *parts: Integers such as ``(seed, epoch, stream)``.

    Returns:
        A non-negative seed for :meth:`torch.Generator.manual_seed`.
    """
    z = 0x9E3779B97F4A7C15
    for p in parts:
        z = (z ^ (p & _MASK64)) & _MASK64
        z = (z + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z >> 1


def random_crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop every sample from its zero-padded copy at its own offset.

    Args:
        x: Batch ``(N, C, H, W)``, any dtype.
        padding: Zero padding on each side.
        offsets: ``(N, 2)`` integer ``(dy, dx)`` in ``[0, 2 * padding]``.

    Returns:
        The cropped batch, same shape and dtype as ``x``.
    """
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = offsets.to(x.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the samples where ``mask`` is true.

    Args:
        x: Batch ``(N, C, H, W)``.
        mask: ``(N,)`` bool.

    Returns:
        The batch with the selected samples mirrored left-right.
    """
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate every sample about its centre by its own angle (bilinear, zero fill).

    The angle is applied in pixel units, so non-square images are not sheared:
    with normalised coordinates ``x_n = x / (W/2)``, ``y_n = y / (H/2)``, the rotation
    ``[[c, -s], [s, c]]`` becomes ``[[c, -s H/W], [s W/H, c]]``.

    Args:
        x: Float batch ``(N, C, H, W)``.
        degrees: ``(N,)`` angles in degrees.

    Returns:
        The rotated batch.
    """
    n, _, h, w = x.shape
    rad = torch.deg2rad(degrees.to(device=x.device, dtype=x.dtype))
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack(
        [torch.stack([cos, -sin * (h / w), zero], 1), torch.stack([sin * (w / h), cos, zero], 1)],
        1,
    )
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Augment:
    """Random crop with zero padding, horizontal flip and small rotation, per sample.

    Applied to a whole batch at once on the batch's device; every sample gets its own crop
    offset, flip decision and angle. The random numbers are drawn on the CPU from the given
    generator (so results do not depend on the device) in a fixed order: crop offsets, flip
    mask, angles.

    Args:
        crop_padding: Zero padding before the random crop back to the input size (0 = off).
        flip: Random horizontal flip with probability 1/2.
        rotation: Maximum absolute angle in degrees, uniform in ``[-rotation, rotation]``
            (0 = off).
    """

    def __init__(self, crop_padding: int = 4, flip: bool = True, rotation: float = 15.0) -> None:
        if crop_padding < 0 or rotation < 0:
            raise DataError("Augment: crop_padding and rotation must be >= 0")
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.rotation = float(rotation)

    def __repr__(self) -> str:
        """Constructor-style representation."""
        return (
            f"Augment(crop_padding={self.crop_padding}, flip={self.flip}, rotation={self.rotation})"
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch.

        Args:
            x: ``(N, C, H, W)`` uint8 or floating batch.
            generator: CPU generator for the random draws (default: the global one).

        Returns:
            The augmented batch, same shape and dtype (uint8 input is rounded back to uint8
            after rotation).
        """
        if x.dim() != 4:
            raise DataError(f"Augment expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
        return self.apply(x, self.draw(x.shape[0], generator))

    def draw(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the random parameters of ``n`` samples (CPU), in the fixed order.

        ``augment(x, g)`` equals ``augment.apply(x, augment.draw(len(x), g))``; drawing a whole
        global batch and slicing it (:meth:`AugmentParams.slice`) gives every data-parallel
        rank the parameters a single process would use for the same samples.
        """
        offsets = (
            torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=generator)
            if self.crop_padding
            else None
        )
        flips = torch.rand(n, generator=generator) < 0.5 if self.flip else None
        angles = (
            (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * self.rotation
            if self.rotation
            else None
        )
        return AugmentParams(offsets, flips, angles)

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment the batch ``x`` with drawn parameters (one row per sample)."""
        offsets, flips, angles = params.offsets, params.flips, params.angles
        if angles is None:
            if offsets is not None:
                x = random_crop(x, self.crop_padding, offsets)
            if flips is not None:
                x = random_flip(x, flips)
            return x
        if x.is_floating_point():
            return affine_augment(x, self.crop_padding, offsets, flips, angles)
        y = affine_augment(x.float(), self.crop_padding, offsets, flips, angles)
        return y.round_().clamp_(0, 255).to(x.dtype)


class AugmentParams(NamedTuple):
    """Per-sample random parameters of :class:`Augment` (None: that transform is off)."""

    offsets: torch.Tensor | None
    flips: torch.Tensor | None
    angles: torch.Tensor | None

    def slice(self, start: int, stop: int) -> AugmentParams:
        """The parameters of samples ``start:stop``."""
        return AugmentParams(*(None if t is None else t[start:stop] for t in self))


def affine_augment(
    x: torch.Tensor,
    padding: int,
    offsets: torch.Tensor | None,
    flips: torch.Tensor | None,
    degrees: torch.Tensor,
) -> torch.Tensor:
    """Crop (zero padding), flip, then rotate every sample, as ONE bilinear resampling.

    Equivalent to ``rotate(random_flip(random_crop(x)))`` up to bilinear interpolation at
    the borders, at the cost of a single ``grid_sample``: output pixel ``p`` samples the
    input at ``F·R·p + s`` (normalised coordinates), with ``R`` the rotation, ``F`` the
    optional mirror of the horizontal axis and ``s`` the crop shift.

    Args:
        x: Float batch ``(N, C, H, W)``.
        padding: Crop padding used to draw ``offsets``.
        offsets: ``(N, 2)`` integer ``(dy, dx)`` in ``[0, 2 * padding]`` or None (no crop).
        flips: ``(N,)`` bool or None (no flip).
        degrees: ``(N,)`` rotation angles in degrees.
    """
    n, c, h, w = x.shape
    rad = torch.deg2rad(degrees.to(dtype=torch.float64))
    cos, sin = torch.cos(rad), torch.sin(rad)
    # rotation in pixel units (no shear for non-square images), as in :func:`rotate`
    r00, r01 = cos, -sin * (h / w)
    r10, r11 = sin * (w / h), cos
    if flips is not None:
        sign = 1.0 - 2.0 * flips.to(torch.float64)
        r00, r01 = r00 * sign, r01 * sign
    tx = torch.zeros(n, dtype=torch.float64)
    ty = torch.zeros(n, dtype=torch.float64)
    if offsets is not None:
        off = offsets.to(torch.float64)
        tx = 2.0 * (off[:, 1] - padding) / w
        ty = 2.0 * (off[:, 0] - padding) / h
    theta = torch.stack([torch.stack([r00, r01, tx], 1), torch.stack([r10, r11, ty], 1)], 1).to(
        device=x.device, dtype=x.dtype
    )
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class TensorLoader:
    """Iterate over a :class:`~neuralign.data.Dataset` in batches on a device.

    Yields ``(x, y)`` with ``x`` float32 in [0, 1] of shape ``(B, C, H, W)`` and ``y`` int64, both
    on ``device``. The dataset is copied to the device once (as uint8). The order and the
    augmentation of epoch ``e`` depend only on ``(seed, e, rank)``: call :meth:`set_epoch` before
    each epoch (as with ``DistributedSampler``); without it every pass repeats epoch 0.

    Sharding for data parallelism: ``batch_size`` is the *per-rank* batch ``B``; the global
    batch is ``G = B * world_size``. Every rank computes the same epoch permutation and cuts
    it into global batches of ``G``; at step ``k`` rank ``r`` takes the ``r``-th contiguous
    piece ``[r*B, (r+1)*B)`` of global batch ``k``. So the union of the ranks' step-``k``
    batches is exactly the batch ``k`` of a single-process loader with batch size ``G`` (same
    seed), and averaging the ranks' gradients of a mean loss reproduces its gradient. The
    augmentation parameters of the whole global batch are drawn on every rank from the same
    generator and sliced (for :class:`Augment`, or any augment with ``draw``/``apply``), so a
    sample is augmented identically whatever the number of ranks. With ``world_size == 1``
    this is the plain loader. An incomplete last global batch is dropped with
    ``drop_last=True`` (every rank then runs ``N // G`` equal steps: what data-parallel
    training needs); otherwise it is split as evenly as possible (the first ranks get one
    sample more; a rank may get none and then runs one step fewer).

    Args:
        dataset: The data.
        batch_size: Samples per batch.
        shuffle: Random order per epoch (otherwise dataset order).
        augment: Batch augmentation applied to the float batch, e.g. :class:`Augment`.
        device: Where the data and the batches live.
        seed: Base seed of the order and the augmentation.
        drop_last: Drop the last incomplete batch.
        rank: This process's shard index.
        world_size: Number of shards.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = False,
        augment: Augment | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = augment
        self.device = torch.device(device)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._images = dataset.images.to(self.device)
        self._labels = dataset.labels.to(self.device)

    def _pieces(self) -> list[tuple[int, int, int, int]]:
        """Per step on this rank: ``(global start, global size, piece start, piece stop)``.

        ``global start``/``size`` locate the global batch in the epoch order; the piece is this
        rank's slice of it (offsets within the global batch).
        """
        n, b, w, r = len(self.dataset), self.batch_size, self.world_size, self.rank
        g = b * w
        out: list[tuple[int, int, int, int]] = []
        for start in range(0, n, g):
            size = min(g, n - start)
            if size < g:
                if self.drop_last:
                    break
                base, extra = divmod(size, w)
                lo = r * base + min(r, extra)
                hi = lo + base + (1 if r < extra else 0)
            else:
                lo, hi = r * b, (r + 1) * b
            if hi > lo:
                out.append((start, size, lo, hi))
        return out

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return sum(hi - lo for _, _, lo, hi in self._pieces())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses.

        Args:
            epoch: Epoch number (any integer).
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Number of batches per epoch on this rank."""
        return len(self._pieces())

    def _order(self) -> torch.Tensor:
        """The epoch's permutation of the whole dataset (identical on every rank; CPU)."""
        n = len(self.dataset)
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 0))
            return torch.randperm(n, generator=gen)
        return torch.arange(n)

    def indices(self) -> torch.Tensor:
        """The sample indices this rank visits in the current epoch, in order (CPU int64)."""
        order = self._order()
        parts = [order[s + lo : s + hi] for s, _, lo, hi in self._pieces()]
        return torch.cat(parts) if parts else order[:0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of the current epoch."""
        order = self._order().to(self.device)
        aug = self.augment
        sliceable = hasattr(aug, "draw") and hasattr(aug, "apply")
        # Shared stream (same on every rank) when the global batch's draws can be sliced;
        # otherwise a per-rank stream (rank 0's equals the single-process one).
        stream_rank = 0 if sliceable else self.rank
        aug_gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 1, stream_rank))
        for start, size, lo, hi in self._pieces():
            idx = order[start + lo : start + hi]
            x = self._images.index_select(0, idx).to(torch.float32).div_(255.0)
            if aug is not None:
                if sliceable:
                    params = aug.draw(size, generator=aug_gen)  # type: ignore[union-attr]
                    x = aug.apply(x, params.slice(lo, hi))  # type: ignore[union-attr]
                else:
                    x = aug(x, generator=aug_gen)
            yield x, self._labels.index_select(0, idx)
