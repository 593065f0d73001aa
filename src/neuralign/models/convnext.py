"""A small ConvNeXt for 32×32 images.

Reference: Z. Liu et al., "A ConvNet for the 2020s", CVPR 2022 (patchify stem, depthwise
7×7 convolution, channels-last LayerNorm, inverted bottleneck MLP with GELU, layer-scale,
LayerNorm + strided 2×2 convolution between stages). Stochastic depth is left out (a
network this small, trained briefly, does not need it). The layer-scale starts at
``layer_scale`` (0.1 by default, instead of the paper's 1e-6, so that a short training run
moves every block), and layers keep PyTorch's default initialisation (the zoo trains
with SGD).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign.errors import ConfigError
from neuralign.models.common import check_positive_int, make_normalize, scale_channels
from neuralign.models.registry import register_model

__all__ = ["ConvNeXt", "convnext"]


class ChannelsLastNorm(nn.Module):
    """LayerNorm over the channels of an ``(N, C, H, W)`` map, computed channels-last
    (``permute`` → ``nn.LayerNorm(C)`` → ``permute`` back)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Block(nn.Module):
    """``x + γ · pw2(GELU(pw1(LN(dw7x7(x)))))``, the MLP in channels-last layout."""

    def __init__(self, dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Stem (2×2 conv, stride 2, + LayerNorm), stages of :class:`Block` separated by
    LayerNorm + 2×2 stride-2 convolutions, global average pooling, LayerNorm, linear head.

    Defaults (``dims=(32, 64, 128)``, ``depths=(1, 1, 2)``) give about 0.4M parameters and
    take 32×32 inputs down to 4×4.

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        dims: Channels per stage (scaled by ``width``).
        depths: Blocks per stage.
        layer_scale: Initial value of every block's layer-scale vector γ.
        width: Width multiplier (``width=0.25`` is the tiny test variant).
        mean: Per-channel input mean (default 0.5 per channel).
        std: Per-channel input standard deviation (default 0.5 per channel).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        dims: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (1, 1, 2),
        layer_scale: float = 0.1,
        width: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_positive_int(num_classes, "num_classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        if len(dims) != len(depths) or not dims:
            raise ConfigError(f"dims {list(dims)} and depths {list(depths)} must match")
        chans = [scale_channels(int(d), width) for d in dims]
        self.normalize = make_normalize(in_channels, mean, std)
        self.stem = nn.Conv2d(in_channels, chans[0], 2, stride=2)
        self.stem_norm = ChannelsLastNorm(chans[0])
        stages: list[nn.Module] = []
        for i, (c, n) in enumerate(zip(chans, depths)):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [ChannelsLastNorm(chans[i - 1]), nn.Conv2d(chans[i - 1], c, 2, stride=2)]
            layers += [Block(c, layer_scale) for _ in range(check_positive_int(int(n), "depth"))]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(chans[-1], eps=1e-6)
        self.head = nn.Linear(chans[-1], num_classes)  # PyTorch default initialisation

    def forward(self, x: Tensor) -> Tensor:
        """Map pixels ``(N, C, H, W)`` in ``[0, 1]`` to logits ``(N, num_classes)``."""
        x = self.stages(self.stem_norm(self.stem(self.normalize(x))))
        return self.head(self.norm(x.mean((-2, -1))))


@register_model("convnext", tiny={"width": 0.25, "depths": [1, 1, 1]})
def convnext(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    dims: Sequence[int] = (32, 64, 128),
    depths: Sequence[int] = (1, 1, 2),
    layer_scale: float = 0.1,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ConvNeXt:
    """Build :class:`ConvNeXt` (about 0.4M parameters with the defaults)."""
    return ConvNeXt(
        num_classes,
        in_channels,
        dims=dims,
        depths=depths,
        layer_scale=layer_scale,
        width=width,
        mean=mean,
        std=std,
    )
