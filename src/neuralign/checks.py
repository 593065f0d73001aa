"""Input checks run before any work starts: does this data fit this model?

Each check raises a typed :class:`~neuralign.errors.NeuralignError` whose message names the
problem and the fix, so a mismatch surfaces as one clear line before anything is written,
instead of an ``IndexError`` deep inside a loss function (or, worse, a silently broadcast
input that trains the wrong thing).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from neuralign.data import Dataset
from neuralign.errors import ConfigError, DataError

__all__ = ["build_model", "check_model_fits_data", "check_training_data"]


def check_training_data(dataset: Dataset, what: str = "training set") -> None:
    """Raise :class:`DataError` unless ``dataset`` can train a classifier.

    A classifier needs samples of at least two classes: on an empty set there is nothing to
    do, and on a single-class set the loss is minimised by a constant output, so "training"
    would silently produce a useless network.

    Args:
        dataset: The data about to be trained on.
        what: How the data is called in the message.

    Raises:
        DataError: If the set is empty or holds a single class.
    """
    if len(dataset) == 0:
        raise DataError(
            f"{what} {dataset.name!r} is empty; check the dataset files or the subset size"
        )
    present = torch.unique(dataset.labels).numel()
    if present < 2:
        only = int(dataset.labels[0])
        raise DataError(
            f"{what} {dataset.name!r} holds samples of a single class ({only}) of its "
            f"{dataset.num_classes}; a classifier needs at least two classes (is the dataset "
            "truncated or filtered?)"
        )


def _spec_kwargs(model: nn.Module) -> dict[str, Any]:
    from neuralign.models import model_spec

    try:
        return dict(model_spec(model).get("kwargs") or {})
    except ConfigError:  # not built by create_model: only the probe below applies
        return {}


def check_model_fits_data(model: nn.Module, dataset: Dataset, source: str = "") -> None:
    """Raise :class:`DataError` unless ``model`` takes ``dataset``'s images and classes.

    Compares the recorded architecture arguments (``in_channels``, ``image_size``) with the
    images, then runs one image through the model (eval mode, no gradient; the mode is
    restored) and compares the number of outputs with ``dataset.num_classes``. A model with
    more outputs than the dataset has classes is refused too: it was trained on another
    dataset, and its accuracy here would be meaningless.

    Args:
        model: The network (on any device).
        dataset: The data it is about to see.
        source: Where the model came from (a checkpoint path), for the message.

    Raises:
        DataError: On a channel, size or class-count mismatch.
    """
    where = f"{source}: " if source else ""
    c, h, w = dataset.shape
    kw = _spec_kwargs(model)
    if "in_channels" in kw and int(kw["in_channels"]) != c:
        raise DataError(
            f"{where}the model takes {kw['in_channels']}-channel images but {dataset.name!r} "
            f"has {c} channel(s); use a checkpoint trained on this dataset (or pass the "
            "matching --dataset)"
        )
    if "image_size" in kw and int(kw["image_size"]) not in (h, w):
        raise DataError(
            f"{where}the model takes {kw['image_size']}x{kw['image_size']} images but "
            f"{dataset.name!r} has {h}x{w}; use a checkpoint trained on this dataset"
        )
    if len(dataset) == 0:
        return
    from neuralign.models.common import split_logits

    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    x = dataset.images[:1].to(device=device, dtype=torch.float32).div(255)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, _ = split_logits(model(x))
    except RuntimeError as exc:
        raise DataError(
            f"{where}images of shape {(c, h, w)} from {dataset.name!r} do not fit the model "
            f"({str(exc).splitlines()[0]}); use a checkpoint trained on this dataset"
        ) from None
    finally:
        model.train(was_training)
    outputs = int(logits.shape[-1])
    if outputs != dataset.num_classes:
        raise DataError(
            f"{where}the model has {outputs} outputs but {dataset.name!r} has "
            f"{dataset.num_classes} classes; use a checkpoint trained on this dataset (or "
            f"set num_classes={dataset.num_classes})"
        )


def build_model(name: str, kwargs: dict[str, Any], where: str = "model.kwargs") -> nn.Module:
    """``create_model(name, **kwargs)``, with constructor crashes turned into ConfigError.

    The architecture arguments of a config are user input: a value of the wrong type (a
    string for a width) otherwise crashes inside a constructor with a bare ``TypeError``.

    Raises:
        ConfigError: If the model cannot be built from these arguments.
    """
    from neuralign.models import create_model

    try:
        return create_model(name, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: cannot build {name!r}: {exc}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ConfigError(
            f"{where}: cannot build {name!r} with {kwargs!r:.200} ({type(exc).__name__}: {exc})"
        ) from None
