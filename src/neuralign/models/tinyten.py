"""TinyTen: the small ten-layer convolutional network of Tatro et al. (NeurIPS 2020).

Reference: N. Tatro, P.-Y. Chen, P. Das, I. Melnyk, P. Sattigeri, R. Lai, "Optimizing Mode
Connectivity via Neuron Alignment", NeurIPS 2020, Section 4 / Appendix (TinyTen, 0.09M
parameters).
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

__all__ = ["TinyTen", "tinyten"]

# (out_channels, kernel, stride, padding) of the eight conv blocks.
_LAYERS: tuple[tuple[int, int, int, int], ...] = (
    (16, 3, 1, 1),
    (16, 3, 1, 1),
    (32, 3, 2, 1),
    (32, 3, 1, 1),
    (32, 3, 1, 1),
    (64, 3, 2, 1),
    (64, 3, 1, 0),
    (64, 1, 1, 0),
)


class TinyTen(nn.Module):
    """Eight Conv(bias)–BN–ReLU blocks, global average pooling and a linear classifier.

    Channels 16,16,32,32,32,64,64,64; kernels 3,3,3,3,3,3,3,1; strides 1,1,2,1,1,2,1,1;
    padding 1,1,1,1,1,1,0,0 (Tatro et al., NeurIPS 2020). Xavier-normal initialisation of
    conv and linear weights, zero biases. 86,778 parameters for 10 classes and RGB input.

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        width: Channel multiplier (``width=0.25`` is the tiny test variant).
        mean: Per-channel input mean (default 0.5 per channel).
        std: Per-channel input standard deviation (default 0.5 per channel).
    """

    def __init__(
        self,
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
        for cout, kernel, stride, padding in _LAYERS:
            cout = scale_channels(cout, width)
            layers += [
                nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=True),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=False),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights_(self, conv="xavier", linear="xavier")

    def forward(self, x: Tensor) -> Tensor:
        """Map pixels ``(N, C, H, W)`` in ``[0, 1]`` to logits ``(N, num_classes)``."""
        return self.fc(self.flatten(self.pool(self.features(self.normalize(x)))))


@register_model("tinyten", tiny={"width": 0.25})
def tinyten(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> TinyTen:
    """Build :class:`TinyTen` (0.09M parameters at ``width=1``)."""
    return TinyTen(num_classes, in_channels, width=width, mean=mean, std=std)
