"""VGG-11 and VGG-16 with batch normalisation, CIFAR style.

Reference: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale
Image Recognition", ICLR 2015 (configurations A and D), with BatchNorm after every conv
(Ioffe & Szegedy, ICML 2015) and the common CIFAR head: global average pooling and a single
linear classifier instead of the three 4096-wide FC layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from neuralign.models.common import (
    check_positive_int,
    init_weights_,
    make_normalize,
    scale_channels,
)
from neuralign.models.registry import register_model

__all__ = ["VGG", "vgg11", "vgg16"]

_M = 0  # marker for a 2x2 max-pool in a configuration
_CONFIGS: dict[str, tuple[int, ...]] = {
    "vgg11": (64, _M, 128, _M, 256, 256, _M, 512, 512, _M, 512, 512, _M),
    "vgg16": (64, 64, _M, 128, 128, _M, 256, 256, 256, _M, 512, 512, 512, _M, 512, 512, 512, _M),
}


class VGG(nn.Module):
    """VGG with BatchNorm: Conv3x3–BN–ReLU stacks, five 2x2 max-pools, GAP, Linear.

    The max-pools use ``ceil_mode=True`` so that 28x28 inputs survive all five
    (28 → 14 → 7 → 4 → 2 → 1); 32x32 and 64x64 inputs pool exactly as usual.

    Args:
        config: Channel counts, with 0 marking a max-pool.
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        width: Channel multiplier (``width=0.0625`` is the tiny test variant).
        mean: Per-channel input mean (default 0.5 per channel).
        std: Per-channel input standard deviation (default 0.5 per channel).
    """

    def __init__(
        self,
        config: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        width: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_positive_int(num_classes, "num_classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        self.normalize = make_normalize(in_channels, mean, std)
        layers: list[nn.Module] = []
        cin = in_channels
        for item in config:
            if item == _M:
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
                continue
            cout = scale_channels(item, width)
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=False),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(cin, num_classes)
        init_weights_(self, conv="kaiming")

    def forward(self, x: Tensor) -> Tensor:
        """Map pixels ``(N, C, H, W)`` in ``[0, 1]`` to logits ``(N, num_classes)``."""
        return self.classifier(self.flatten(self.pool(self.features(self.normalize(x)))))


@register_model("vgg11", tiny={"width": 0.0625})
def vgg11(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> VGG:
    """Build VGG-11 with BN (configuration A; 9.23M parameters at ``width=1``)."""
    return VGG(_CONFIGS["vgg11"], num_classes, in_channels, width=width, mean=mean, std=std)


@register_model("vgg16", tiny={"width": 0.0625})
def vgg16(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> VGG:
    """Build VGG-16 with BN (configuration D; 14.73M parameters at ``width=1``)."""
    return VGG(_CONFIGS["vgg16"], num_classes, in_channels, width=width, mean=mean, std=std)
