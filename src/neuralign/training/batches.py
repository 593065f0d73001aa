"""Training on your own batches: any re-iterable of ``(x, y)``, e.g. a ``DataLoader``.

:func:`~neuralign.training.train_model` is fastest on a :class:`~neuralign.data.Dataset`
(device-resident uint8 images, batched augmentation, exact resume). It also accepts any
re-iterable of ``(x, y)`` batches — a :class:`torch.utils.data.DataLoader`, a list of tensor
pairs: each epoch iterates it once, moving each batch to the training device. Your loader
then owns shuffling and augmentation (``TrainConfig.augment`` does not apply), and a resumed
run sees whatever order your loader gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from neuralign.data import Dataset
from neuralign.errors import ConfigError, DataError

__all__ = ["UserBatches", "as_user_batches"]


class UserBatches:
    """A re-iterable of user ``(x, y)`` batches moved to ``device`` (``set_epoch`` is a no-op)."""

    def __init__(self, batches: Iterable[Any], device: torch.device, what: str) -> None:
        self.batches = batches
        self.device = device
        self.what = what

    def set_epoch(self, epoch: int) -> None:
        """Kept for the interface of :class:`~neuralign.data.TensorLoader`."""
        set_epoch = getattr(getattr(self.batches, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)  # a DistributedSampler reshuffles per epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = 0
        for i, batch in enumerate(self.batches):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise DataError(
                    f"{self.what}: batch {i} is a {type(batch).__name__}, not an (x, y) pair"
                )
            x, y = batch[0], batch[1]
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise DataError(f"{self.what}: batch {i} holds {type(x).__name__}, not tensors")
            if x.dtype == torch.uint8:
                x = x.float().div_(255.0)
            n += 1
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True).long()
        if n == 0:
            raise DataError(f"{self.what} yielded no batch")


def as_user_batches(data: Any, device: torch.device, what: str) -> UserBatches | None:
    """``UserBatches`` for a non-Dataset iterable; None for a Dataset.

    Raises:
        ConfigError: If ``data`` is neither a Dataset nor a re-iterable of batches (a
            one-shot iterator or generator would be empty from the second epoch on).
    """
    if isinstance(data, Dataset):
        return None
    if isinstance(data, Iterator) or not isinstance(data, Iterable):
        raise ConfigError(
            f"{what} must be a neuralign Dataset or a re-iterable of (x, y) batches such as a "
            f"torch DataLoader or a list; got {type(data).__name__}"
        )
    return UserBatches(data, device, what)
