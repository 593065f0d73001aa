"""Building blocks shared by the model zoo.

Every zoo model takes pixels in ``[0, 1]`` and starts with :class:`Normalize`, whose
statistics are not in the state dict, so they are never permuted, interpolated along a curve
or averaged. Every zoo model is also
``torch.fx.symbolic_trace``-able (no data-dependent Python control flow, no in-place ops),
because permutation symmetry is discovered by tracing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from neuralign.errors import ConfigError

__all__ = [
    "Normalize",
    "check_positive_int",
    "init_weights_",
    "make_normalize",
    "resolve_stats",
    "scale_channels",
    "split_logits",
]

#: Default per-channel mean and standard deviation (maps [0, 1] pixels to [-1, 1]).
DEFAULT_STAT = 0.5


def resolve_stats(
    value: Sequence[float] | float | None, in_channels: int, what: str = "mean"
) -> tuple[float, ...]:
    """Return a per-channel statistic as a tuple of ``in_channels`` floats.

    Args:
        value: ``None`` (default 0.5 per channel), a single number (broadcast to every
            channel) or a sequence of ``in_channels`` numbers.
        in_channels: Number of image channels.
        what: Name of the statistic, for error messages.

    Raises:
        ConfigError: If the length is wrong, a value is not finite, or a ``std`` is not
            positive.
    """
    if value is None:
        stats: tuple[float, ...] = (DEFAULT_STAT,) * in_channels
    elif isinstance(value, (int, float)):
        stats = (float(value),) * in_channels
    else:
        stats = tuple(float(v) for v in value)
    if len(stats) != in_channels:
        raise ConfigError(
            f"{what} has {len(stats)} values but the model has in_channels={in_channels}; "
            f"pass one value per channel"
        )
    if not all(math.isfinite(v) for v in stats):
        raise ConfigError(f"{what} must be finite, got {stats}")
    if what == "std" and any(v <= 0 for v in stats):
        raise ConfigError(f"std must be positive, got {stats}")
    return stats


def check_positive_int(value: Any, what: str) -> int:
    """Return ``value`` as an int, raising :class:`ConfigError` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def scale_channels(channels: int, width: float) -> int:
    """Scale a channel count by a width multiplier (rounded, at least 1).

    Raises:
        ConfigError: If ``width`` is not a positive finite number.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise ConfigError(f"width must be a positive number, got {width!r}")
    if not math.isfinite(width) or width <= 0:
        raise ConfigError(f"width must be a positive number, got {width!r}")
    return max(1, round(channels * width))


class Normalize(nn.Module):
    """Per-channel affine normalisation ``(x - mean) / std`` of ``[0, 1]`` pixel inputs.

    ``mean`` and ``std`` (shape ``(1, C, 1, 1)``) are *not* in ``state_dict()``: a state
    dict holds only the learnable network, so normalisation is never permuted, interpolated
    or averaged. They are kept as plain tensor attributes rather than (non-persistent)
    buffers so that ``torch.func.functional_call(model, model.state_dict(), (x,),
    strict=True)`` accepts a state dict without them (``strict=True`` demands every
    registered buffer, persistent or not); :meth:`_apply` moves and casts them with the
    module, so ``.to(device)``, ``.double()`` etc. behave as for buffers.

    Args:
        mean: Per-channel means (in ``[0, 1]`` pixel units).
        std: Per-channel standard deviations (positive, same length as ``mean``).

    Raises:
        ConfigError: If ``mean`` and ``std`` differ in length or ``std`` is not positive.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = tuple(float(m) for m in mean)
        std_t = resolve_stats(std, len(mean_t), "std")
        self.mean = torch.tensor(mean_t, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std_t, dtype=torch.float32).view(1, -1, 1, 1)

    def _apply(self, fn: Any, recurse: bool = True) -> Normalize:
        # Move/cast the statistics together with the module (as buffers would be).
        super()._apply(fn, recurse)
        self.mean = fn(self.mean)
        self.std = fn(self.std)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Normalise a batch ``x`` of shape ``(N, C, H, W)``."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """Show the statistics in the module's repr."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def make_normalize(
    in_channels: int,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
) -> Normalize:
    """Build the :class:`Normalize` a zoo model starts with (defaults 0.5 per channel)."""
    return Normalize(
        resolve_stats(mean, in_channels, "mean"), resolve_stats(std, in_channels, "std")
    )


def split_logits(out: Tensor | Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Split a model output into the main logits and a list of auxiliary logits.

    Models with auxiliary heads (GoogLeNet) return ``(logits, aux1, aux2)`` in training mode
    with the heads on, and plain logits otherwise; this handles both.

    Args:
        out: A logits tensor, or a tuple/list whose first entry is the main logits.

    Returns:
        ``(logits, [aux, ...])``; the list is empty for a plain tensor.

    Raises:
        TypeError: If ``out`` is neither a tensor nor a non-empty sequence of tensors.
    """
    if isinstance(out, Tensor):
        return out, []
    if isinstance(out, (tuple, list)) and len(out) > 0 and all(isinstance(o, Tensor) for o in out):
        return out[0], list(out[1:])
    raise TypeError(
        f"expected a logits tensor or a non-empty tuple of tensors, got {type(out).__name__}"
    )


def init_weights_(module: nn.Module, *, conv: str = "kaiming", linear: str = "default") -> None:
    """Initialise convolutions, linear layers and batch norms of ``module`` in place.

    Args:
        module: The network to initialise.
        conv: ``"kaiming"`` (He et al. 2015, normal, fan-out, ReLU gain) or ``"xavier"``
            (Glorot & Bengio 2010, normal) for conv weights; conv biases are zeroed.
        linear: ``"default"`` keeps PyTorch's initialisation of linear layers, ``"xavier"``
            uses Xavier-normal weights with zero bias.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if conv == "xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear == "xavier":
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
