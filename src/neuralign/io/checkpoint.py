"""Checkpoints: safetensors weights with JSON metadata in the file header.

A checkpoint written by :func:`save_checkpoint` holds the model's state dict and a JSON
document under the header key ``"neuralign"`` with the architecture name and arguments,
dataset, seed, epoch, metrics and library version, so :func:`load_model` rebuilds the model
from the file alone. Foreign ``.pt``/``.pth`` state dicts are read with
``torch.load(weights_only=True)``: nothing is ever unpickled beyond tensors and plain
containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from neuralign.errors import CheckpointError, ConfigError
from neuralign.io.atomic import atomic_path

METADATA_KEY = "neuralign"

#: Metadata key of the checksum over the tensors and the rest of the metadata.
DIGEST_KEY = "content_sha256"


def content_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and the metadata (minus itself).

    safetensors has no checksum of its own: a flipped byte in the weights loads silently.
    neuralign checkpoints record this digest when written and :func:`load_checkpoint`
    verifies it, so a corrupted checkpoint is refused instead of loading wrong weights
    (docs/reliability.md, "Integrity").
    """
    import hashlib

    h = hashlib.sha256()
    rest = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    h.update(json.dumps(rest, sort_keys=True, default=str).encode())
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"\0{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _version() -> str:
    from neuralign._version import __version__

    return __version__


def require_safetensors_suffix(path: str | os.PathLike[str], option: str = "path") -> None:
    """Raise :class:`ConfigError` unless ``path`` ends in ``.safetensors``."""
    if Path(path).suffix != ".safetensors":
        from neuralign.io.outputs import checkpoint_out_path

        fixed = checkpoint_out_path(path, option)  # raises for another suffix
        raise ConfigError(
            f"{option} {str(path)!r}: checkpoints are safetensors files; write {fixed} instead"
        )


def save_checkpoint(
    path: str | os.PathLike[str],
    model_or_state: nn.Module | dict[str, torch.Tensor],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Atomically write weights and metadata to ``path`` (a ``.safetensors`` file).

    Args:
        path: destination file.
        model_or_state: a module (its ``state_dict()`` is saved, and its architecture if it
            was built by :func:`neuralign.create_model`) or a state dict.
        metadata: JSON-serialisable extra information (dataset, seed, epoch, metrics...).

    Returns:
        The path written.

    Raises:
        ConfigError: If ``path`` does not end in ``.safetensors`` (the bytes are
            safetensors; a ``.pt`` name would make every reader take them for a corrupt
            pickle: docs/reliability.md, "Output paths").
    """
    require_safetensors_suffix(path)
    meta: dict[str, Any] = {"library_version": _version(), "torch_version": torch.__version__}
    if isinstance(model_or_state, nn.Module):
        from neuralign.models import model_spec

        with contextlib.suppress(AttributeError, KeyError, ValueError):
            meta["arch"] = model_spec(model_or_state)
        state = model_or_state.state_dict()
    else:
        state = model_or_state
    meta.update(metadata or {})
    meta.pop(DIGEST_KEY, None)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    # the digest covers the metadata as it will read back (after the JSON round trip)
    meta = json.loads(json.dumps(meta, sort_keys=True, default=str))
    meta[DIGEST_KEY] = content_digest(tensors, meta)
    header = {METADATA_KEY: json.dumps(meta, sort_keys=True, default=str)}
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return target


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the JSON metadata of a neuralign checkpoint ({} for foreign files)."""
    p = _existing(path)
    if p.suffix != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
    except _PARSE_ERRORS as exc:
        raise CheckpointError(
            f"{p}: not a readable safetensors file ({type(exc).__name__}: {exc}); it is "
            "truncated or corrupt: re-create or re-download it"
        ) from exc
    raw = header.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: corrupt neuralign metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{p}: corrupt neuralign metadata (not an object)")
    return meta


# What the third-party parsers (safetensors, torch's weights-only unpickler) raise on a
# corrupt file: a flipped byte in a pickle stream can surface as almost any of these. They
# are caught only around the parse of an untrusted file and re-raised as CheckpointError.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    SafetensorError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    MemoryError,
    RecursionError,
    struct.error,  # a 1-byte .pt file: torch's unpickler reads a 4-byte length (fuzz find)
)


def _is_refusal(exc: BaseException) -> bool:
    """True when torch's weights-only unpickler refused a global (a non-tensor object)."""
    text = str(exc)
    return "Weights only load failed" in text and (
        "Unsupported global" in text or "GLOBAL" in text or "not an allowed global" in text
    )


def _short(exc: BaseException, limit: int = 160) -> str:
    """The informative line of a (possibly multi-line, boilerplate-laden) parser error."""
    boiler = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(boiler)] or lines or [type(exc).__name__]
    text = useful[-1] if "WeightsUnpickler error" in useful[0] else useful[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _existing(path: str | os.PathLike[str]) -> Path:
    from neuralign.io.files import regular_file

    return regular_file(path, "checkpoint", CheckpointError)


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state", "model", "state"):
            if key in obj and isinstance(obj[key], dict):
                return _extract_state_dict(obj[key], path)
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise CheckpointError(
        f"{path}: no state dict found (expected a dict of tensors, optionally under "
        "'state_dict' or 'model')"
    )


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, metadata)`` from a neuralign or foreign checkpoint.

    ``.safetensors`` files are read directly; ``.pt``/``.pth``/``.bin`` files go through
    ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

    A neuralign checkpoint's recorded checksum (:func:`content_digest`) is verified: a
    file with a changed byte is refused even where safetensors itself would load it.

    Raises:
        CheckpointError: missing, truncated, corrupt or unsafe file, or NaN/Inf weights.
    """
    p = _existing(path)
    if p.suffix == ".safetensors":
        meta = read_metadata(p)
        try:
            state = load_file(str(p), device=str(device))
        except _PARSE_ERRORS as exc:
            raise CheckpointError(
                f"{p}: corrupt or truncated safetensors file ({type(exc).__name__}: {exc}); "
                "re-create or re-download it"
            ) from exc
        recorded = meta.get(DIGEST_KEY)
        if recorded is not None and recorded != content_digest(state, meta):
            raise CheckpointError(
                f"{p}: corrupt: its weights or metadata do not match the checksum recorded "
                "when it was written (a changed byte); re-create or re-download it"
            )
    else:
        try:
            with warnings.catch_warnings():  # torch warns about unusual pickle protocols
                warnings.simplefilter("ignore")
                obj = torch.load(str(p), map_location=device, weights_only=True)
        except pickle.UnpicklingError as exc:
            if not _is_refusal(exc):
                raise CheckpointError(
                    f"{p}: corrupt, or not a weights-only checkpoint ({_short(exc)}); "
                    "re-save it with torch.save(model.state_dict())"
                ) from exc
            raise CheckpointError(
                f"{p}: refused to load: the file contains pickled objects other than tensors "
                "(only weights-only checkpoints are accepted; re-save it with "
                "torch.save(model.state_dict()))"
            ) from exc
        except _PARSE_ERRORS as exc:
            raise CheckpointError(
                f"{p}: corrupt or truncated checkpoint ({type(exc).__name__}: {_short(exc)}); "
                "re-create or re-download it"
            ) from exc
        state = _extract_state_dict(obj, p)
        meta = {}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{p}: non-finite (NaN/Inf) values in {len(bad)} entries, e.g. {bad[:3]}; "
            "the training run that wrote it diverged"
        )
    return state, meta


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "") -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shaped = [
        f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    where = f"{source}: " if source else ""
    problems = []
    if missing:
        problems.append(f"missing entries {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected entries {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if shaped:
        problems.append(f"shape mismatch {shaped[:3]}{' ...' if len(shaped) > 3 else ''}")
    if problems:
        raise CheckpointError(
            where
            + "; ".join(problems)
            + " (is it a checkpoint of another architecture or num_classes?)"
        )


def load_model(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    trust_code: bool = False,
    **arch_kwargs: Any,
) -> nn.Module:
    """Rebuild a model from a checkpoint file alone (or with ``arch`` for foreign files).

    Args:
        path: a neuralign ``.safetensors`` checkpoint or a foreign state-dict file.
        arch: registry name, required when the file carries no neuralign metadata.
        device: where to put the model.
        trust_code: rebuild a model whose metadata names your own factory
            (``package.module:factory`` / ``file.py:factory``) even if it was not trusted in
            this process; that imports and runs the code (see
            :mod:`neuralign.models.reference`).
        **arch_kwargs: architecture arguments overriding/adding to the stored ones.

    Returns:
        The model in eval mode with the checkpoint's weights.
    """
    from neuralign.models import create_model

    state, meta = load_checkpoint(path, device="cpu")
    spec = meta.get("arch") or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("kwargs") or {}, dict):
        raise CheckpointError(f"{path}: malformed architecture metadata {spec!r:.100}")
    name = arch or spec.get("name")
    if not name:
        raise CheckpointError(
            f"{path}: carries no architecture metadata; pass arch=... (CLI: --arch NAME) "
            "and its arguments"
        )
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: malformed architecture name {name!r:.60}")
    kwargs = dict(spec.get("kwargs") or {}) if spec.get("name") == name else {}
    kwargs.update(arch_kwargs)
    from neuralign.models.reference import is_reference, require_trusted

    if arch is None and is_reference(name) and not trust_code:
        require_trusted(name, str(path))  # the file names code: run it only if allowed
    # Build on the meta device first: untrusted metadata must not allocate (or crash) before
    # its shapes are checked against the tensors actually in the file.
    try:
        with torch.device("meta"):
            probe = create_model(name, **kwargs)
    except ConfigError as exc:
        if arch is not None:
            raise
        raise CheckpointError(f"{path}: its architecture metadata is invalid: {exc}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError, AssertionError) as exc:
        raise CheckpointError(
            f"{path}: its architecture {name}({kwargs!r:.120}) cannot be built "
            f"({type(exc).__name__}: {exc})"
        ) from None
    check_state_dict(probe, state, str(path))
    model = create_model(name, **kwargs)
    model.load_state_dict(state)
    model.eval()
    return model.to(device)
