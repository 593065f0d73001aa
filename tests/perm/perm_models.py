"""Small awkward models for the permutation tests (imported by the test modules)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial affine parameters and running statistics, so that a
    spec missing a BN member is caught in eval mode too."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
    return model


class FunctionalNet(nn.Module):
    """Functional activations, nested ModuleDict/Sequential, flatten of C x H x W."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(
            {
                "a": nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)),
                "b": nn.Sequential(nn.Sequential(nn.Conv2d(6, 5, 3, stride=2, padding=1))),
            }
        )
        self.fc1 = nn.Linear(5 * 4 * 4, 7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.blocks["a"](x))
        x = F.max_pool2d(x, 2)
        x = torch.relu(self.blocks["b"](x))
        x = torch.flatten(x, 1)
        x = self.fc1(x).relu()
        x = x.view(x.size(0), -1)
        return F.log_softmax(self.fc2(x), dim=1)


class DepthwiseNet(nn.Module):
    """Depthwise-separable block; a learnable per-channel scale used elementwise."""

    def __init__(self) -> None:
        super().__init__()
        self.pw1 = nn.Conv2d(3, 8, 1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.pw2 = nn.Conv2d(8, 6, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.pw1(x)))
        x = F.relu6(self.bn2(self.dw(x))) * self.scale
        x = F.relu(self.bn3(self.pw2(x)))
        return self.fc(x.mean((2, 3)))


class SharedNet(nn.Module):
    """The same conv is called twice: its input and output groups are tied."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.shared(x))
        x = torch.tanh(self.shared(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.short(x)
        return F.relu(out)


class ResNet(nn.Module):
    """Residual streams with identity and projection shortcuts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.stage1 = nn.Sequential(Block(4, 4, 1), Block(4, 4, 1))
        self.stage2 = nn.Sequential(Block(4, 8, 2), Block(8, 8, 1))
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.stage2(self.stage1(x))
        return self.fc(F.adaptive_avg_pool2d(x, (1, 1)).view(x.shape[0], -1))


class ConcatNet(nn.Module):
    """Inception-like: branches concatenated along channels, a pass-through pool branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3), nn.ReLU())
        self.b2 = nn.Sequential(
            nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(inplace=True)
        )
        self.mix = nn.Conv2d(3 + 5 + 4, 6, 1)
        self.fc = nn.Linear(6 * 2 * 2 + 3 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = torch.cat([self.b1(s), self.b2(s), F.max_pool2d(s, 3, 1, 1)], dim=1)
        z = F.relu(self.mix(y))
        z = F.adaptive_max_pool2d(z, 2)
        b = F.avg_pool2d(self.b1(s), 4)  # b1 reused: same group, fine
        return self.fc(torch.cat([z, b], 1).flatten(1))


class MLP(nn.Module):
    """MLP with LayerNorm, GELU and dropout on 2-D tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 12)
        self.norm = nn.LayerNorm(12)
        self.fc2 = nn.Linear(12, 9)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(9, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm(self.fc1(x)))
        x = self.drop(torch.sigmoid(self.fc2(x)) * 2.0 - 1.0)
        return self.out(x)


class AuxNet(nn.Module):
    """A head that only runs in train mode (like GoogLeNet's auxiliary classifiers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.aux = nn.Sequential(
            nn.Conv2d(6, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
        )
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.conv(x))
        out = self.fc(h.mean((2, 3)))
        if self.training:
            return out, self.aux(h)
        return out


class SortNet(nn.Module):
    """An op the table cannot reason about: sorting units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = torch.sort(h, dim=1).values
        h = F.relu(self.conv2(h))
        return self.fc(h.mean((2, 3)))


class ShuffleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        return self.conv(x)


class ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.block = ShuffleBlock()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(F.relu(self.stem(x))).mean((2, 3)))


#: name -> (factory, example-input factory)
AWKWARD = {
    "functional": (FunctionalNet, lambda: torch.randn(4, 3, 16, 16)),
    "depthwise": (DepthwiseNet, lambda: torch.randn(4, 3, 8, 8)),
    "shared": (SharedNet, lambda: torch.randn(4, 3, 8, 8)),
    "resnet": (ResNet, lambda: torch.randn(4, 3, 8, 8)),
    "concat": (ConcatNet, lambda: torch.randn(4, 3, 8, 8)),
    "mlp": (MLP, lambda: torch.randn(4, 10)),
    "aux": (AuxNet, lambda: torch.randn(4, 3, 8, 8)),
}


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    factory, inp = AWKWARD[name]
    return _randomize_bn(factory()), inp()
