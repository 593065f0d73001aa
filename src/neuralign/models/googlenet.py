"""GoogLeNet (Inception v1) for small images, with auxiliary classifiers.

References: C. Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (the
architecture; auxiliary heads after 4a and 4d with loss weight 0.3), with the channel
configuration of the torchvision implementation (whose "5x5" branch is a 3x3 conv and whose
convs are bias-free, BN eps 1e-3), adapted to 32x32 inputs as in Tatro et al., "Optimizing
Mode Connectivity via Neuron Alignment", NeurIPS 2020 (10.24M parameters on CIFAR-100,
auxiliary heads included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from neuralign.errors import ConfigError
from neuralign.models.common import (
    check_positive_int,
    init_weights_,
    make_normalize,
    scale_channels,
)
from neuralign.models.registry import register_model

__all__ = ["BasicConv2d", "GoogLeNet", "Inception", "InceptionAux", "googlenet"]

# name: (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 conv), pool proj)
_INCEPTION: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class BasicConv2d(nn.Module):
    """Conv (no bias) – BatchNorm (eps 1e-3) – ReLU.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        padding: Zero padding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        """Apply conv, BN and ReLU."""
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Inception module: four parallel branches concatenated along channels.

    Branches: 1x1; 1x1 → 3x3; 1x1 → 3x3 (the "5x5" branch, as in torchvision);
    3x3 max-pool (stride 1, pad 1) → 1x1.

    Args:
        in_channels: Input channels.
        ch1x1: Output channels of the 1x1 branch.
        ch3x3red: Reduction channels of the 3x3 branch.
        ch3x3: Output channels of the 3x3 branch.
        ch5x5red: Reduction channels of the "5x5" branch.
        ch5x5: Output channels of the "5x5" branch.
        pool_proj: Output channels of the pooling branch.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), BasicConv2d(in_channels, pool_proj, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branch outputs along channels."""
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: avg-pool to 4x4, 1x1 BasicConv2d, FC–ReLU–dropout–FC.

    Args:
        in_channels: Input channels.
        num_classes: Number of output classes.
        conv_channels: Channels of the 1x1 conv (128 at full width).
        hidden: Hidden units of the first FC layer (1024 at full width).
        dropout: Dropout probability before the last FC layer (0.7 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        conv_channels: int = 128,
        hidden: int = 1024,
        dropout: float = 0.7,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = BasicConv2d(in_channels, conv_channels, 1)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(conv_channels * 16, hidden)
        self.relu = nn.ReLU(inplace=False)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map a feature map to auxiliary logits."""
        out = self.flatten(self.conv(self.pool(x)))
        return self.fc2(self.dropout(self.relu(self.fc1(out))))


class GoogLeNet(nn.Module):
    """GoogLeNet for small (e.g. 32x32) images.

    conv1 7x7/64 stride 1 (the stem max-pool removed), conv2 1x1/64, conv3 3x3/192,
    max-pool (→ 16x16 on 32x32 input); inception 3a, 3b; max-pool (→ 8x8); 4a–4e (no
    max-pool 4); 5a, 5b; global average pooling; dropout 0.2; fc. Auxiliary heads after 4a
    and 4d. At full width with 100 classes: 10,237,388 parameters including the auxiliary
    heads (the paper's 10.24M), 5,702,404 without them.

    In training mode with ``aux_logits=True`` the forward returns ``(logits, aux1, aux2)``
    (train with ``loss + 0.3 * (loss_aux1 + loss_aux2)``); otherwise it returns logits. Use
    :func:`neuralign.models.split_logits` to handle both.

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        width: Channel multiplier for every conv and hidden layer (``width=0.125`` is the
            tiny test variant).
        aux_logits: Build and use the auxiliary heads.
        dropout: Dropout probability before the final fc.
        aux_dropout: Dropout probability inside the auxiliary heads.
        mean: Per-channel input mean (default 0.5 per channel).
        std: Per-channel input standard deviation (default 0.5 per channel).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        width: float = 1.0,
        aux_logits: bool = True,
        dropout: float = 0.2,
        aux_dropout: float = 0.7,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_positive_int(num_classes, "num_classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        for what, p in (("dropout", dropout), ("aux_dropout", aux_dropout)):
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{what} must be in [0, 1), got {p!r}")

        def c(n: int) -> int:
            return scale_channels(n, width)

        self.aux_logits = bool(aux_logits)
        self.normalize = make_normalize(in_channels, mean, std)
        self.conv1 = BasicConv2d(in_channels, c(64), 7, stride=1, padding=3)
        self.conv2 = BasicConv2d(c(64), c(64), 1)
        self.conv3 = BasicConv2d(c(64), c(192), 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        cin = c(192)
        blocks: dict[str, Inception] = {}
        for name, channels in _INCEPTION.items():
            block = Inception(cin, *(c(ch) for ch in channels))
            blocks[name] = block
            cin = block.out_channels
        self.inception3a, self.inception3b = blocks["3a"], blocks["3b"]
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a, self.inception4b = blocks["4a"], blocks["4b"]
        self.inception4c, self.inception4d = blocks["4c"], blocks["4d"]
        self.inception4e = blocks["4e"]
        self.inception5a, self.inception5b = blocks["5a"], blocks["5b"]

        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if self.aux_logits:
            self.aux1 = InceptionAux(
                blocks["4a"].out_channels, num_classes, c(128), c(1024), aux_dropout
            )
            self.aux2 = InceptionAux(
                blocks["4d"].out_channels, num_classes, c(128), c(1024), aux_dropout
            )

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        init_weights_(self, conv="kaiming")

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Return logits, or ``(logits, aux1, aux2)`` in training mode with aux heads on."""
        out = self.conv3(self.conv2(self.conv1(self.normalize(x))))
        out = self.maxpool2(out)
        out = self.inception3b(self.inception3a(out))
        out = self.maxpool3(out)
        out = self.inception4a(out)
        use_aux = self.training and self.aux_logits
        aux1 = self.aux1(out) if use_aux and self.aux1 is not None else None
        out = self.inception4d(self.inception4c(self.inception4b(out)))
        aux2 = self.aux2(out) if use_aux and self.aux2 is not None else None
        out = self.inception5b(self.inception5a(self.inception4e(out)))
        logits = self.fc(self.dropout(self.flatten(self.avgpool(out))))
        if aux1 is not None and aux2 is not None:
            return logits, aux1, aux2
        return logits


@register_model("googlenet", tiny={"width": 0.125})
def googlenet(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    aux_logits: bool = True,
    dropout: float = 0.2,
    aux_dropout: float = 0.7,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> GoogLeNet:
    """Build :class:`GoogLeNet` (10.24M parameters with 100 classes and aux heads)."""
    return GoogLeNet(
        num_classes,
        in_channels,
        width=width,
        aux_logits=aux_logits,
        dropout=dropout,
        aux_dropout=aux_dropout,
        mean=mean,
        std=std,
    )
