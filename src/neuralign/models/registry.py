"""Model registry: build zoo models by name and rebuild them from a JSON spec.

A model is registered with :func:`register_model` on a builder whose signature is
``(num_classes: int = 10, in_channels: int = 3, *, <keyword-only options>)``.
:func:`create_model` binds the caller's keyword arguments against that signature, fills in
every default, and records the complete, JSON-serialisable argument set on the instance, so
that ``create_model(**model_spec(model))`` rebuilds an identical architecture (the same
state-dict keys and shapes). Checkpoints store this spec as metadata, so a file alone
rebuilds its model.

Example:
    >>> from neuralign.models import create_model, model_spec
    >>> m = create_model("resnet20", num_classes=100, width=0.5)
    >>> model_spec(m)["kwargs"]["width"]
    0.5
"""

from __future__ import annotations

import copy
import inspect
import numbers
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from neuralign.errors import ConfigError

__all__ = [
    "SPEC_ATTRIBUTE",
    "create_model",
    "list_models",
    "model_spec",
    "register_model",
    "tiny_kwargs",
]

#: Name of the instance attribute on which :func:`create_model` records the spec.
SPEC_ATTRIBUTE = "_neuralign_spec"

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Builder)

_REGISTRY: dict[str, Builder] = {}
_TINY: dict[str, dict[str, Any]] = {}


def register_model(name: str, *, tiny: Mapping[str, Any] | None = None) -> Callable[[B], B]:
    """Register a model builder under ``name`` (decorator).

    Args:
        name: Registry name (case-insensitive; stored lower-case).
        tiny: Keyword arguments giving a tiny, fast variant of the model for tests (for
            example ``{"width": 0.25}``); returned by :func:`tiny_kwargs`.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ConfigError: If another builder is already registered under ``name``.
    """
    key = name.lower()

    def decorator(builder: B) -> B:
        existing = _REGISTRY.get(key)
        if existing is not None and existing.__qualname__ != builder.__qualname__:
            raise ConfigError(
                f"a model named {key!r} is already registered ({existing.__qualname__}); "
                "choose another name"
            )
        _REGISTRY[key] = builder
        _TINY[key] = dict(tiny or {})
        return builder

    return decorator


def list_models() -> list[str]:
    """Return the names of all registered models, sorted."""
    return sorted(_REGISTRY)


def tiny_kwargs(name: str) -> dict[str, Any]:
    """Return keyword arguments for a tiny variant of model ``name`` (for fast tests).

    Raises:
        ConfigError: If ``name`` is not registered.
    """
    return dict(_TINY[_lookup(name)[0]])


def _lookup(name: str) -> tuple[str, Builder]:
    key = name.lower() if isinstance(name, str) else name
    if not isinstance(key, str) or key not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}; available models: {', '.join(list_models())} "
            "(or your own factory as package.module:factory or path/to/file.py:factory)"
        )
    return key, _REGISTRY[key]


def _to_jsonable(value: Any, where: str) -> Any:
    """Convert a keyword value to plain JSON types (tuples become lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _to_jsonable(value.item(), where)
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v, where) for k, v in value.items()}
    raise ConfigError(
        f"model argument {where}={value!r} is not JSON-serialisable; pass numbers, strings, "
        "booleans, None or lists of them"
    )


def _merge_default(what: str, explicit: int, default: int, nested: Any) -> int:
    """Resolve ``num_classes``/``in_channels`` given both explicitly and in a ``kwargs`` map."""
    if nested is None:
        return explicit
    if explicit != default and explicit != nested:
        raise ConfigError(
            f"conflicting values for {what}: {explicit} and kwargs[{what!r}]={nested}"
        )
    return int(nested)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kw: Any) -> nn.Module:
    """Build a registered model.

    ``create_model(**model_spec(model))`` rebuilds ``model``: a ``kwargs`` mapping (as in a
    spec) is merged with the other keyword arguments, and its ``num_classes`` /
    ``in_channels`` entries are used unless a different non-default value is passed
    explicitly (a conflict raises :class:`~neuralign.errors.ConfigError`).

    Inputs of every zoo model are pixels in ``[0, 1]``; the per-channel normalisation
    (``mean``, ``std`` keyword arguments, default 0.5 each) lives inside the model as
    non-persistent buffers.

    Args:
        name: Registered model name (see :func:`list_models`), or a reference to your own
            factory, ``package.module:factory`` or ``path/to/file.py:factory`` (this imports
            your code; see :mod:`neuralign.models.reference`).
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        **kw: Model-specific keyword arguments (for example ``width``).

    Returns:
        The model, in training mode, with its complete spec recorded (see :func:`model_spec`).

    Raises:
        ConfigError: If ``name`` is unknown, a keyword argument is not accepted by the model,
            or a value is invalid or not JSON-serialisable.
    """
    from neuralign.models.reference import is_reference

    ref = is_reference(name)
    key, builder = (name, None) if ref else _lookup(name)
    if "kwargs" in kw and isinstance(kw["kwargs"], Mapping):
        nested = dict(kw.pop("kwargs"))
        clash = sorted(k for k in set(nested) & set(kw) if nested[k] != kw[k])
        if clash:
            raise ConfigError(f"model {key!r}: conflicting values for {clash} in kwargs")
        num_classes = _merge_default(
            "num_classes", num_classes, 10, nested.pop("num_classes", None)
        )
        in_channels = _merge_default("in_channels", in_channels, 3, nested.pop("in_channels", None))
        kw = {**nested, **kw}
    if builder is None:
        return _create_from_reference(name, num_classes, in_channels, kw)
    signature = inspect.signature(builder)
    try:
        bound = signature.bind(num_classes=num_classes, in_channels=in_channels, **kw)
    except TypeError as exc:
        accepted = [p for p in signature.parameters if p not in ("num_classes", "in_channels")]
        unknown = sorted(set(kw) - set(accepted))
        detail = f"unknown argument(s) {unknown}" if unknown else str(exc)
        raise ConfigError(
            f"model {key!r}: {detail}; accepted keyword arguments: "
            f"num_classes, in_channels, {', '.join(accepted)}"
        ) from None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    # Normalisation defaults depend on in_channels: record them explicitly so that the
    # spec alone determines the model.
    from neuralign.models.common import resolve_stats

    for stat in ("mean", "std"):
        if stat in arguments:
            arguments[stat] = list(resolve_stats(arguments[stat], in_channels, stat))
    kwargs = {k: _to_jsonable(v, k) for k, v in arguments.items()}
    model = builder(**kwargs)
    setattr(model, SPEC_ATTRIBUTE, {"name": key, "kwargs": kwargs})
    return model


def _create_from_reference(
    ref: str, num_classes: int, in_channels: int, kw: dict[str, Any]
) -> nn.Module:
    """Build ``package.module:factory`` / ``file.py:factory`` (see :mod:`.reference`)."""
    from neuralign.models.reference import (
        build_from_reference,
        normalise_reference,
        trust_reference,
    )

    ref = normalise_reference(ref)
    args = {"num_classes": num_classes, "in_channels": in_channels, **kw}
    model, passed = build_from_reference(ref, **args)
    trust_reference(ref)  # built on the caller's request: files naming it may rebuild it
    kwargs = {k: _to_jsonable(v, k) for k, v in passed.items()}
    setattr(model, SPEC_ATTRIBUTE, {"name": ref, "kwargs": kwargs})
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """Return ``{"name": ..., "kwargs": {...}}`` with which ``create_model`` rebuilds ``model``.

    The result is JSON-serialisable and a fresh copy (mutating it does not affect the model).

    Raises:
        ConfigError: If ``model`` was not built by :func:`create_model`.
    """
    spec = getattr(model, SPEC_ATTRIBUTE, None)
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{type(model).__name__} was not built by neuralign.models.create_model, so it "
            "carries no spec; build it with create_model(name, ...) or store its "
            "architecture yourself"
        )
    return copy.deepcopy(spec)
