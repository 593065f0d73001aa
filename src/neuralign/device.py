"""Device selection: ``cuda`` when available, then ``mps``, then ``cpu``.

A device name is validated before anything uses it (docs/reliability.md, "Ranges and
devices"): :func:`check_device_name` checks the spelling (``cpu``, ``cuda``, ``cuda:N``,
``mps``, ``auto``) without touching the hardware, and :func:`select_device` also checks
that the device exists here (CUDA available, ``N`` below the device count, MPS built).
"""

from __future__ import annotations

import re

import torch

from neuralign.errors import ConfigError

__all__ = ["check_device_name", "select_device"]

_NAME = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d{1,4}))?$")


def check_device_name(device: str, what: str = "device") -> str:
    """Return ``device`` if it is spelled ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.

    Raises:
        ConfigError: ``"WHAT: must be cpu, cuda, cuda:N, mps or auto, got 'tpu'"``.
    """
    m = _NAME.match(device) if isinstance(device, str) else None
    if m is None or (m.group(2) is not None and m.group(1) not in ("cuda", "cpu")):
        raise ConfigError(f"{what}: must be cpu, cuda, cuda:N, mps or auto, got {device!r}")
    return device


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Return the requested device, or the best available one when ``device`` is None/"auto".

    Raises:
        ConfigError: the name is malformed, or the requested device does not exist on this
            machine (no CUDA, a CUDA index beyond the device count, no MPS).
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        check_device_name(device)
        dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} requested but CUDA is not available; use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"device {str(device)!r} requested but this machine has {count} CUDA "
                f"device(s) (cuda:0 to cuda:{count - 1})"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"device {str(device)!r} requested but MPS is not available; use --device cpu"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"device: must be cpu, cuda, cuda:N, mps or auto, got {str(device)!r}")
    return dev
