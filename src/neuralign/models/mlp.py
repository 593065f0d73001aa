"""Multi-layer perceptron on flattened images.

Reference: the fully connected baseline of weight-matching studies (e.g. S. Ainsworth,
J. Hayase, S. Srinivasa, "Git Re-Basin: Merging Models modulo Permutation Symmetries",
ICLR 2023: a 3x512 MLP on (Fashion-)MNIST).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from neuralign.models.common import check_positive_int, make_normalize
from neuralign.models.registry import register_model

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Normalize → Flatten → (Linear → ReLU) × len(hidden) → Linear.

    The first layer has ``in_channels * image_size**2`` inputs, so the model accepts only
    square images of side ``image_size``.

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        image_size: Side of the (square) input images.
        hidden: Widths of the hidden layers (``hidden=(16, 16)`` is the tiny test variant).
        mean: Per-channel input mean (default 0.5 per channel).
        std: Per-channel input standard deviation (default 0.5 per channel).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        image_size: int = 28,
        hidden: Sequence[int] = (512, 512, 512),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_positive_int(num_classes, "num_classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        image_size = check_positive_int(image_size, "image_size")
        widths = [check_positive_int(h, "each hidden width") for h in hidden]
        self.normalize = make_normalize(in_channels, mean, std)
        self.flatten = nn.Flatten(1)
        layers: list[nn.Module] = []
        fan_in = in_channels * image_size * image_size
        for h in widths:
            layers += [nn.Linear(fan_in, h), nn.ReLU(inplace=False)]
            fan_in = h
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(fan_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map pixels ``(N, C, image_size, image_size)`` to logits ``(N, num_classes)``."""
        return self.fc(self.layers(self.flatten(self.normalize(x))))


@register_model("mlp", tiny={"hidden": [16, 16]})
def mlp(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    image_size: int = 28,
    hidden: Sequence[int] = (512, 512, 512),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> MLP:
    """Build :class:`MLP` (default three hidden layers of 512 units)."""
    return MLP(num_classes, in_channels, image_size=image_size, hidden=hidden, mean=mean, std=std)
