"""Device selection: ``cuda`` when available, then ``mps``, then ``cpu``."""

from __future__ import annotations

import torch

from neuralign.errors import ConfigError


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Return the requested device, or the best available one when ``device`` is None/"auto".

    Raises:
        ConfigError: the requested device does not exist on this machine.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available; use --device cpu"
        )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"device {device!r} requested but MPS is not available; use --device cpu"
            )
    return dev
