"""Models by reference: build your own network from ``package.module:factory`` or ``file.py:factory``.

Wherever an architecture name is accepted (:func:`~neuralign.models.create_model`, the CLI's
``--arch``, the experiment config's ``model.arch``) a *reference* to a factory may be given
instead:

* ``mypackage.nets:make_net`` — imported with :func:`importlib.import_module` (the package must
  be importable, e.g. installed or on ``PYTHONPATH``);
* ``path/to/nets.py:make_net`` — the file is executed as a module (relative paths are taken
  from the current directory and recorded as absolute paths).

**This imports and runs your code** (module-level statements included), exactly as
``import`` would; only use references to code you trust.

A checkpoint (or curve file) that *names* a factory is data that asks to run code, so
reading one does not import anything unless you allow it: the reference is trusted when
you built a model from it yourself in this process (``create_model``, ``--arch``, a config's
``model.arch``), when you pass ``trust_code=True`` to :func:`~neuralign.io.load_model`, when
the CLI runs with ``neuralign --trust-code ...``, or when ``NEURALIGN_TRUST_CODE=1`` is set.
Otherwise :class:`UntrustedCodeError` says which code the file names and how to allow it.

The factory is called with keyword arguments: the caller's own arguments (the config's
``model.kwargs``, ``--width``) are always passed, and an error is raised if the factory does
not accept one; the arguments neuralign supplies from the data (``num_classes``,
``in_channels``, ``mean``, ``std``, ``image_size``) are passed only if the factory accepts them
(by name or through ``**kwargs``). The reference and the arguments passed are recorded on the
model (:func:`~neuralign.models.model_spec`) and hence in every checkpoint, so
:func:`~neuralign.io.load_model` rebuilds it — as long as the file or module is still there.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from neuralign.errors import CheckpointError, ConfigError

__all__ = [
    "CONTEXT_ARGUMENTS",
    "UntrustedCodeError",
    "build_from_reference",
    "is_reference",
    "normalise_reference",
    "require_trusted",
    "trust_all_references",
    "trust_reference",
]

#: Arguments neuralign fills from the data; passed to a factory only if it accepts them.
CONTEXT_ARGUMENTS = ("num_classes", "in_channels", "mean", "std", "image_size")

_TRUSTED: set[str] = set()
_TRUST_ALL = False


class UntrustedCodeError(CheckpointError):
    """A file names a model factory (code) that has not been trusted in this process."""


def trust_reference(ref: str) -> None:
    """Allow files naming ``ref`` to import and run it (done by building a model from it)."""
    _TRUSTED.add(normalise_reference(ref))


def trust_all_references(flag: bool = True) -> None:
    """Allow every model reference named by a file (the CLI's ``--trust-code``)."""
    global _TRUST_ALL
    _TRUST_ALL = bool(flag)


def require_trusted(ref: str, source: str) -> None:
    """Refuse to import ``ref`` on behalf of the file ``source`` unless it is trusted.

    Raises:
        UntrustedCodeError: Naming the code and the three ways to allow it.
    """
    import os

    if _TRUST_ALL or os.environ.get("NEURALIGN_TRUST_CODE") == "1":
        return
    if normalise_reference(ref) in _TRUSTED:
        return
    raise UntrustedCodeError(
        f"{source} names the model factory {ref!r}: rebuilding it imports and runs that code. "
        "If you trust it, run the CLI as `neuralign --trust-code ...`, pass trust_code=True "
        "(or arch=...) to load_model, or set NEURALIGN_TRUST_CODE=1"
    )


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_reference(arch: object) -> bool:
    """True if ``arch`` looks like ``package.module:factory`` or ``path/file.py:factory``."""
    if not isinstance(arch, str) or ":" not in arch:
        return False
    where, _, attr = arch.rpartition(":")
    if not _DOTTED.fullmatch(attr):
        return False
    return where.endswith(".py") or bool(_DOTTED.fullmatch(where))


def normalise_reference(arch: str) -> str:
    """The reference with a file path made absolute (what is recorded in checkpoints)."""
    where, _, attr = arch.rpartition(":")
    if where.endswith(".py"):
        where = str(Path(where).expanduser().resolve())
    return f"{where}:{attr}"


def _import_file(path: Path, ref: str) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"model reference {ref!r}: file {path} does not exist")
    name = "neuralign_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__file__", None) == str(path):
        return cached
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model reference {ref!r}: {path} cannot be imported as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(
            f"model reference {ref!r}: importing {path} failed ({type(exc).__name__}: {exc})"
        ) from exc
    return module


def _resolve(ref: str) -> Any:
    where, _, attr = ref.rpartition(":")
    if where.endswith(".py"):
        module = _import_file(Path(where).expanduser().resolve(), ref)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ConfigError(
                f"model reference {ref!r}: cannot import module {where!r} "
                f"({type(exc).__name__}: {exc}); is it installed or on PYTHONPATH?"
            ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model reference {ref!r}: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model reference {ref!r}: {attr} is not callable")
    return obj


def _accepts(factory: Any) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def build_from_reference(ref: str, **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Import the factory ``ref`` names and call it.

    Args:
        ref: ``package.module:factory`` or ``path/to/file.py:factory``.
        **kwargs: Arguments; those in :data:`CONTEXT_ARGUMENTS` are dropped if the factory
            does not accept them, any other unaccepted one is an error.

    Returns:
        ``(model, arguments passed)``.

    Raises:
        ConfigError: If the import fails, the factory is missing or not callable, refuses an
            argument, raises, or returns something that is not an ``nn.Module``.
    """
    factory = _resolve(ref)
    names, var_kw = _accepts(factory)
    passed = {k: v for k, v in kwargs.items() if var_kw or k in names or k not in CONTEXT_ARGUMENTS}
    unknown = sorted(k for k in passed if not var_kw and k not in names)
    if unknown:
        raise ConfigError(
            f"model reference {ref!r}: the factory does not accept {unknown}; it accepts "
            f"{sorted(names) or 'no keyword arguments'}"
        )
    try:
        model = factory(**passed)
    except Exception as exc:
        raise ConfigError(
            f"model reference {ref!r}: the factory raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model reference {ref!r}: the factory returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model, passed
