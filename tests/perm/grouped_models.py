"""Networks with grouped convolutions (1 < groups < channels): a ResNeXt-style bottleneck
and a plain stack of grouped convolutions (also transposed, and a depthwise conv with a
channel multiplier)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResNeXtBlock(nn.Module):
    """1x1 conv -> grouped 3x3 conv -> 1x1 conv, BN/ReLU, identity shortcut."""

    def __init__(self, c: int, width: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + x)


class ResNeXtNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(12)
        self.block1 = ResNeXtBlock(12, 16, groups=4)
        self.block2 = ResNeXtBlock(12, 8, groups=4)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class GroupedStack(nn.Module):
    """Grouped convolutions one after the other (their groups all share one block
    permutation), a transposed grouped convolution, then a depthwise convolution with a
    channel multiplier (groups = in < out)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.g1 = nn.Conv2d(8, 16, 3, padding=1, groups=4)
        self.bn1 = nn.BatchNorm2d(16)
        self.g2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2, groups=4)
        self.mix = nn.Conv2d(8, 6, 1)
        self.dw = nn.Conv2d(6, 12, 3, padding=1, groups=6)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SiLU, not ReLU: no unit of this small random network is dead on every input, so
        # a planted permutation is identifiable from activations.
        x = F.silu(self.conv0(x))
        x = F.silu(self.bn1(self.g1(x)))
        x = F.silu(self.g2(x))
        x = F.silu(self.up(x))
        x = F.silu(self.dw(F.silu(self.mix(x))))
        return self.head(x.mean((2, 3)))


#: name -> (factory, input shape)
GROUPED = {
    "resnext": (ResNeXtNet, (3, 8, 8)),
    "grouped_stack": (GroupedStack, (3, 6, 6)),
}


def make_grouped(name: str, batch: int = 4, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The model (non-trivial BatchNorm parameters and statistics) and a batch of inputs."""
    torch.manual_seed(seed)
    factory, shape = GROUPED[name]
    model = factory()
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            # fan-in scaling keeps the signal alive through the stack: the outputs depend
            # on the input, so the invariance checks are not vacuous
            with torch.no_grad():
                m.weight.normal_(0.0, 1.5 / (m.weight[0].numel() ** 0.5), generator=gen)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model, torch.randn(batch, *shape, generator=gen)
