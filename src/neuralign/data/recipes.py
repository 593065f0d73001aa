"""The data recipes that the CLI, the pipeline and the trainers share, each defined once.

- :func:`default_augment`: the training augmentation of endpoints and curves (the paper's
  CIFAR preprocessing, Tatro et al. 2020: random crop of the image padded by 4 pixels at
  32×32, horizontal flip, ±15° rotation), scaled to the image size and without the flip for greyscale digits.
- :func:`alignment_subset`: the class-balanced training subset that alignment statistics
  are computed on (the paper's 20% of the training set by default).
- :func:`bn_subset` / :func:`bn_loader`: the data that BatchNorm statistics are recomputed
  from at every point of a path (``bn_mode``; see ``neuralign.paths.recompute_bn``).
- :func:`make_loader`: a :class:`~neuralign.data.TensorLoader` on a device, optionally with
  the default augmentation and optionally this process's shard of global batches (for
  data-parallel training under ``torchrun``).
"""

from __future__ import annotations

import torch

from neuralign import distributed as dist_
from neuralign.data.datasets import Dataset
from neuralign.data.loader import Augment, TensorLoader
from neuralign.data.subset import balanced_subset
from neuralign.errors import ConfigError

__all__ = [
    "BN_MODES",
    "alignment_subset",
    "bn_loader",
    "bn_subset",
    "default_augment",
    "make_loader",
    "shard_batch_size",
]

#: How BatchNorm statistics are recomputed along a path: on a class-balanced training
#: subset, on the full augmented training set (one pass), or not at all.
BN_MODES = ("train-subset", "train-full-augmented", "none")


def default_augment(dataset: Dataset) -> Augment:
    """The default training augmentation for ``dataset``'s images.

    Random crop after zero padding of 1/8 of the image side (4 pixels at 32×32, the paper's),
    horizontal flip for RGB images only (a flipped digit is another symbol) and a random
    rotation in ±15°.
    """
    h = dataset.images.shape[-1]
    return Augment(crop_padding=max(1, h // 8), flip=dataset.images.shape[1] == 3, rotation=15.0)


def shard_batch_size(batch_size: int, world_size: int | None = None) -> int:
    """This rank's share of a global batch of ``batch_size`` (``world_size`` processes).

    Raises:
        ConfigError: if ``batch_size`` is not divisible by the number of processes.
    """
    world = dist_.world_size() if world_size is None else world_size
    if batch_size % world:
        raise ConfigError(
            f"batch size {batch_size} (the global batch) must be divisible by the number of "
            f"processes {world}"
        )
    return batch_size // world


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool | Augment | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    shard: bool = False,
) -> TensorLoader:
    """A loader over ``dataset`` on ``device``.

    Args:
        dataset: The data.
        batch_size: The (global) batch size.
        shuffle: Random order per epoch.
        augment: ``True`` for :func:`default_augment`, an :class:`Augment` to use it,
            ``False``/``None`` for none.
        device: Where the batches live.
        seed: Seed of the order and the augmentation.
        shard: Under data parallelism, this rank's slice of global batches of ``batch_size``
            (incomplete last global batches are dropped so that every rank runs the same
            number of steps). Without a process group this is the plain loader.
    """
    aug = default_augment(dataset) if augment is True else (augment or None)
    world = dist_.world_size() if shard else 1
    return TensorLoader(
        dataset,
        batch_size=shard_batch_size(batch_size, world),
        shuffle=shuffle,
        augment=aug,
        device=device,
        seed=seed,
        drop_last=world > 1,
        rank=dist_.rank() if shard else 0,
        world_size=world,
    )


def alignment_subset(
    train: Dataset, *, fraction: float = 1.0, size: int = 0, seed: int = 0
) -> Dataset:
    """The class-balanced training subset used as alignment data.

    ``size`` > 0 takes that many images (at most the whole split), else ``fraction`` of the
    split (the paper uses 20%); ``fraction`` >= 1 is the whole split.
    """
    if size:
        return balanced_subset(train, n=min(size, len(train)), seed=seed)
    if fraction < 1:
        return balanced_subset(train, fraction=fraction, seed=seed)
    return train


def bn_subset(train: Dataset, n: int, seed: int = 0) -> Dataset:
    """The class-balanced, non-augmented BN subset of ``n`` training images (``train-subset``).

    Drawn with seed ``seed + 1``, so that it differs from the other subsets of a run drawn
    with ``seed``.
    """
    return balanced_subset(train, n=min(n, len(train)), seed=seed + 1)


def bn_loader(
    train: Dataset,
    mode: str,
    *,
    subset: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> TensorLoader | None:
    """The data BatchNorm statistics are recomputed from at each point of a path.

    Args:
        train: The training split.
        mode: One of :data:`BN_MODES`: ``train-subset`` (:func:`bn_subset` of ``subset``
            images, in order), ``train-full-augmented`` (the whole split, shuffled, with
            :func:`default_augment`) or ``none`` (``None``: keep the stored statistics).
        subset: Images of the ``train-subset`` mode.
        batch_size: Batch size of the recomputation pass.
        device: Where the batches live.
        seed: Seed of the subset and of the augmented order.

    Raises:
        ConfigError: for an unknown ``mode``.
    """
    if mode == "none":
        return None
    if mode == "train-full-augmented":
        return make_loader(train, batch_size, shuffle=True, augment=True, device=device, seed=seed)
    if mode == "train-subset":
        return make_loader(bn_subset(train, subset, seed), batch_size, device=device)
    raise ConfigError(f"unknown bn_mode {mode!r}; expected one of {', '.join(BN_MODES)}")
