"""Small hand-made networks and the sklearn digits data shared by the curves and paths tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


class ConvBN(nn.Module):
    """conv-BN-ReLU-GAP-Linear on 1x8x8 inputs."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.head(h.mean(dim=(2, 3)))


class MLPBN(nn.Module):
    """Two hidden layers with BatchNorm1d, on flattened 1x8x8 inputs."""

    def __init__(self, hidden: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        self.register_buffer("scale", torch.tensor(1.0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * self.scale)


class Batches:
    """In-memory (x, y) batches; the shuffle depends only on ``seed`` and the epoch."""

    def __init__(
        self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = self.x.shape[0]
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]


def load_digits_tensors() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:1300], y[:1300], x[1300:], y[1300:]


def train_endpoint(
    model: nn.Module, data: Batches, epochs: int, seed: int, lr: float = 0.05
) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for epoch in range(epochs):
        data.set_epoch(epoch)
        for x, y in data:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    return model


def make_pair(cls: type[nn.Module], **kw: int) -> tuple[nn.Module, nn.Module]:
    """Two differently initialised networks with non-trivial BN statistics."""
    out = []
    for seed in (10, 20):
        torch.manual_seed(seed)
        m = cls(**kw)
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_()
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(seed)
        for name, p in m.named_parameters():
            if ".weight" in name and p.dim() == 1:  # BN gamma
                with torch.no_grad():
                    p.uniform_(0.5, 1.5)
        out.append(m)
    return out[0], out[1]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny models on one intra-op thread (many threads only contend on a busy CI box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
