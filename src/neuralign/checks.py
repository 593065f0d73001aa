"""Input checks run before any work starts: does this data fit this model?

Each check raises a typed :class:`~neuralign.errors.NeuralignError` whose message names the
problem and the fix, so a mismatch surfaces as one clear line before anything is written,
instead of an ``IndexError`` deep inside a loss function (or, worse, a silently broadcast
input that trains the wrong thing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from neuralign.errors import ConfigError, DataError, DivergedError, ModelMismatchError

if TYPE_CHECKING:
    from neuralign.data import Dataset

__all__ = [
    "build_model",
    "check_compatible_models",
    "check_finite_loss",
    "check_finite_state",
    "check_model_fits_data",
    "check_training_data",
]


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


#: Largest network a config may describe (parameters; 4 bytes each in float32, and the
#: curves hold one copy per bend): a typo in a width otherwise allocates until memory runs out.
MAX_PARAMETERS = 2_000_000_000


def _check_size(name: str, kwargs: dict[str, Any], where: str) -> None:
    """Refuse a model of more than :data:`MAX_PARAMETERS` parameters, counted on the meta
    device (no memory allocated). A model that cannot be built there is not checked."""
    from neuralign.models import create_model

    try:
        with torch.device("meta"):
            model = create_model(name, **kwargs)
    except Exception:  # noqa: BLE001 - the real build below reports the error
        return
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"{where}: {name!r} with {kwargs!r:.200} has {n:,} parameters, more than "
            f"{MAX_PARAMETERS:,}; check the widths"
        )


def build_model(name: str, kwargs: dict[str, Any], where: str = "model.kwargs") -> nn.Module:
    """``create_model(name, **kwargs)``, with constructor crashes turned into ConfigError.

    The architecture arguments of a config are user input: a value of the wrong type (a
    string for a width) otherwise crashes inside a constructor with a bare ``TypeError``.

    Raises:
        ConfigError: If the model cannot be built from these arguments.
    """
    from neuralign.models import create_model

    _check_size(name, kwargs, where)
    try:
        return create_model(name, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: cannot build {name!r}: {exc}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ConfigError(
            f"{where}: cannot build {name!r} with {kwargs!r:.200} ({type(exc).__name__}: {exc})"
        ) from None


# ---------------------------------------------------------------------- divergence


def check_finite_loss(
    loss: float | torch.Tensor,
    what: str = "training",
    *,
    epoch: int | None = None,
    hint: str = "lower the learning rate",
) -> None:
    """Raise :class:`DivergedError` if ``loss`` is NaN or infinite.

    The one guard every trainer calls on its epoch (or step) loss, so a diverged run stops
    with the same clear line wherever it happens (endpoint, curve, PAM P-step and ψ-step,
    robust training) instead of saving NaN weights that later turn into silently wrong
    numbers (docs/reliability.md, "Divergence").

    Args:
        loss: The loss (a Python number or a tensor of any shape; a tensor is synced).
        what: What was being trained, for the message (``"curve training"``).
        epoch: The epoch, for the message.
        hint: The fix to suggest.
    """
    if isinstance(loss, torch.Tensor):
        finite = bool(torch.isfinite(loss.detach()).all())
        shown: Any = loss.detach().flatten()[0].item() if loss.numel() else loss
    else:
        finite = math.isfinite(float(loss))
        shown = loss
    if not finite:
        at = f" at epoch {epoch}" if epoch is not None else ""
        raise DivergedError(f"{what} diverged{at} (loss {shown}); {hint}")


def check_finite_state(
    state: Mapping[str, torch.Tensor] | nn.Module,
    what: str = "training",
    *,
    epoch: int | None = None,
    hint: str = "lower the learning rate",
) -> None:
    """Raise :class:`DivergedError` if a floating-point entry of ``state`` is NaN/Inf.

    Called before a trainer saves weights, so nothing non-finite is ever written.
    """
    sd = state.state_dict() if isinstance(state, nn.Module) else state
    bad = [
        k
        for k, v in sd.items()
        if isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and not bool(torch.isfinite(v).all())
    ]
    if bad:
        at = f" at epoch {epoch}" if epoch is not None else ""
        raise DivergedError(
            f"{what} diverged{at}: non-finite (NaN/Inf) weights in {len(bad)} entries, e.g. "
            f"{bad[:3]}; {hint}"
        )


# ---------------------------------------------------------------------- model pairs


def _as_state(m: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return m.state_dict() if isinstance(m, nn.Module) else m


def check_compatible_models(
    models: Sequence[nn.Module | Mapping[str, torch.Tensor]],
    names: Sequence[str] | None = None,
    *,
    spec: Any = None,
    what: str = "",
) -> None:
    """Raise :class:`ModelMismatchError` unless all ``models`` share one architecture.

    Compares every model's state dict with the first one's: the same keys, and for each key
    the same shape and dtype. When ``spec`` (a :class:`~neuralign.perm.PermutationSpec`)
    is given, every model must fit it too (its ``validate``). The message names the first
    mismatch (keys in forward order), e.g. ``model B has entries model A lacks:
    ['layers.2.weight', ...]`` or ``fc.weight: shape (10, 32) in model A, (10, 16) in model
    B``. Without this check a pair of different depths aligns "successfully" and the aligned
    model computes a different function, and a width mismatch surfaces as an untyped
    ``RuntimeError`` deep inside a matrix product.

    Args:
        models: Two or more modules or state dicts.
        names: Their names in the message (default ``model A``, ``model B``, ...).
        spec: Optional permutation spec all models must fit.
        what: The operation, as a message prefix (``"align"``).

    Raises:
        ModelMismatchError: On the first difference found.
    """
    if names is None:
        names = [
            f"model {chr(ord('A') + i)}" if i < 26 else f"model {i}" for i in range(len(models))
        ]
    pre = f"{what}: " if what else ""
    states = [_as_state(m) for m in models]
    if not states:
        return
    ref, ref_name = states[0], names[0]
    ref_keys = list(ref.keys())
    for st, name in zip(states[1:], names[1:], strict=True):
        extra = [k for k in st if k not in ref]
        missing = [k for k in ref_keys if k not in st]
        if extra or missing:
            parts = []
            if extra:
                parts.append(f"{name} has entries {ref_name} lacks: {extra[:4]}")
            if missing:
                parts.append(f"{ref_name} has entries {name} lacks: {missing[:4]}")
            raise ModelMismatchError(
                f"{pre}{ref_name} and {name} are not the same architecture ({'; '.join(parts)}"
                "); both models must be built with the same architecture and arguments"
            )
        for k in ref_keys:
            a, b = ref[k], st[k]
            if tuple(a.shape) != tuple(b.shape):
                raise ModelMismatchError(
                    f"{pre}{k}: shape {tuple(a.shape)} in {ref_name}, {tuple(b.shape)} in {name}; "
                    "both models must be built with the same architecture and arguments (width, "
                    "num_classes, ...)"
                )
            if a.dtype != b.dtype:
                raise ModelMismatchError(
                    f"{pre}{k}: dtype {a.dtype} in {ref_name}, {b.dtype} in {name}; convert both "
                    "models to one dtype first"
                )
    if spec is not None:
        from neuralign.errors import NeuralignError

        for st, name in zip(states, names, strict=True):
            try:
                spec.validate(st)
            except NeuralignError as exc:
                raise ModelMismatchError(
                    f"{pre}{name} does not fit the permutation spec: {exc}"
                ) from None
