"""CIFAR ResNets (ResNet-20/32/56) with BasicBlocks and projection shortcuts.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, Section 4.2 (the 6n+2 CIFAR networks), with 1x1 conv + BN projection shortcuts
where the shape changes, as used by Tatro et al., "Optimizing Mode Connectivity via Neuron
Alignment", NeurIPS 2020 (ResNet32, 0.47M parameters).
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

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet56"]


class BasicBlock(nn.Module):
    """Two 3x3 Conv–BN layers with a residual connection: ``relu(F(x) + shortcut(x))``.

    The shortcut is the identity when the shape is unchanged, otherwise a 1x1 conv (with the
    block's stride) followed by BN ("option B" of He et al. 2016).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first conv (and of the projection shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=False)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2``.

    Stem Conv3x3(16)–BN–ReLU; three stages of ``n`` BasicBlocks of widths 16/32/64 (times
    ``width``), stride 2 at the first block of stages 2 and 3; global average pooling;
    Linear. No conv biases; Kaiming-normal conv initialisation (He et al., ICCV 2015).

    Args:
        blocks_per_stage: ``n`` (3 → ResNet20, 5 → ResNet32, 9 → ResNet56).
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        width: Channel multiplier (``width=0.25`` is the tiny test variant).
        mean: Per-channel input mean (default 0.5 per channel).
        std: Per-channel input standard deviation (default 0.5 per channel).
    """

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        width: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        n = check_positive_int(blocks_per_stage, "blocks_per_stage")
        num_classes = check_positive_int(num_classes, "num_classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        widths = [scale_channels(c, width) for c in (16, 32, 64)]
        self.normalize = make_normalize(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        cin = widths[0]
        stages: list[nn.Sequential] = []
        for i, cout in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights_(self, conv="kaiming")

    def forward(self, x: Tensor) -> Tensor:
        """Map pixels ``(N, C, H, W)`` in ``[0, 1]`` to logits ``(N, num_classes)``."""
        out = self.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.flatten(self.pool(out)))


@register_model("resnet20", tiny={"width": 0.25})
def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> CifarResNet:
    """Build ResNet-20 (n = 3; 0.27M parameters at ``width=1``)."""
    return CifarResNet(3, num_classes, in_channels, width=width, mean=mean, std=std)


@register_model("resnet32", tiny={"width": 0.25})
def resnet32(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> CifarResNet:
    """Build ResNet-32 (n = 5; 0.47M parameters at ``width=1``, as in Tatro et al. 2020)."""
    return CifarResNet(5, num_classes, in_channels, width=width, mean=mean, std=std)


@register_model("resnet56", tiny={"width": 0.25})
def resnet56(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> CifarResNet:
    """Build ResNet-56 (n = 9; 0.86M parameters at ``width=1``)."""
    return CifarResNet(9, num_classes, in_channels, width=width, mean=mean, std=std)
