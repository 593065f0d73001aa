"""Building blocks of post-2018 networks, written as users write them (for the symmetry tests).

Each model is small, runs on a few 8x8 or 16x16 images and has every unit alive, so both
alignment methods can recover a planted permutation exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    """Squeeze-excite gate; ``style`` picks how the gate is broadcast back over H x W."""

    def __init__(self, c: int, hidden: int, style: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, c)
        self.style = style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        s = torch.sigmoid(self.fc2(F.silu(self.fc1(x.mean((2, 3))))))
        if self.style == "none":
            return x * s[:, :, None, None]
        if self.style == "view":
            return x * s.view(n, c, 1, 1)
        if self.style == "unsqueeze":
            return x * s.unsqueeze(-1).unsqueeze(-1)
        if self.style == "expand":
            return x * s[..., None, None].expand_as(x)
        raise ValueError(self.style)


class SENet(nn.Module):
    def __init__(self, style: str = "none") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.se = SqueezeExcite(8, 4, style)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm, written out (statistics over the channel axis)."""

    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(c) + 0.5)
        self.bias = nn.Parameter(torch.randn(c) * 0.1)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> permute to channels-last -> LayerNorm -> Linear -> GELU -> Linear ->
    layer-scale -> permute back -> residual add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1 = nn.Linear(c, 4 * c)
        self.pw2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 2, stride=2)
        self.stem_norm = LayerNorm2d(6)
        self.block = ConvNeXtBlock(6)
        self.down_norm = LayerNorm2d(6)
        self.down = nn.Conv2d(6, 8, 2, stride=2)
        self.scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)  # layer-scale, channels-first
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.stem_norm(self.stem(x)))
        x = self.down(self.down_norm(x))
        x = F.gelu(x) * self.scale
        return self.head(x.mean((-2, -1)))


class UNet(nn.Module):
    """Two levels; skip concatenations after ``F.interpolate``, ``nn.Upsample`` and a
    ``ConvTranspose2d``; padding of the upsampled map."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = nn.Sequential(nn.Conv2d(12, 5, 3, padding=1), nn.ReLU())
        self.upconv = nn.ConvTranspose2d(5, 5, 2, stride=2)
        self.dec1 = nn.Sequential(nn.Conv2d(9, 4, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)  # 16
        e2 = self.enc2(F.max_pool2d(e1, 2))  # 8
        m = self.mid(F.max_pool2d(e2, 2))  # 4
        m = F.interpolate(m, scale_factor=2.0, mode="bilinear", align_corners=False)  # 8
        d2 = self.dec2(torch.cat([m, e2], dim=1))
        u = self.up1(d2)[:, :, 1:-1, 1:-1]  # 16, cropped to 14
        u = F.relu(self.upconv(F.pad(u, (1, 1, 1, 1))))  # padded to 16, up to 32
        u = F.avg_pool2d(u, 2)  # 16
        d1 = self.dec1(torch.cat([e1, u], dim=1))
        return self.out(d1)


class FlattenHead(nn.Module):
    """Conv features flattened into a Linear head (no global pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.fc1 = nn.Linear(5 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class TokenMixerNet(nn.Module):
    """A ViT-like residual stream without attention: patch embedding, CLS token, learned
    position embedding, pre-norm MLP blocks, CLS readout."""

    def __init__(self, dim: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 5, dim) * 0.5)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.fc1 = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(depth))
        self.fc2 = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (N, 4, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for norm, fc1, fc2 in zip(self.norms, self.fc1, self.fc2):
            x = x + fc2(F.gelu(fc1(norm(x))))
        return self.head(self.norm(x)[:, 0])


class GNBlock(nn.Module):
    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(groups, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(groups, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.silu(self.gn1(self.conv1(x)))
        return F.silu(self.gn2(self.conv2(out)) + x)


class GroupNormNet(nn.Module):
    """ResNet-GN style: GroupNorm on the residual stream (4 groups of 3) and inside blocks;
    GroupNorm over a concatenation whose parts are whole channel groups."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.gn = nn.GroupNorm(4, 12)
        self.block = GNBlock(12, 4)
        self.side = nn.Conv2d(12, 3, 1)
        self.cat_gn = nn.GroupNorm(5, 15)  # blocks of 3: side = 1 block, stream = 4 blocks
        self.head = nn.Linear(15, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(F.silu(self.gn(self.stem(x))))
        y = F.silu(self.cat_gn(torch.cat([F.silu(self.side(x)), x], 1)))
        return self.head(y.mean((2, 3)))


class Attention(nn.Module):
    """Hand-written multi-head self-attention in three common spellings."""

    def __init__(self, dim: int, heads: int, style: str) -> None:
        super().__init__()
        self.heads, self.style = heads, style
        if style == "separate":
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h, d = self.heads, c // self.heads
        if self.style == "separate":  # q/k/v Linear, view + transpose, explicit softmax
            q = self.q(x).view(b, t, h, d).transpose(1, 2)
            k = self.k(x).view(b, t, h, d).transpose(1, 2)
            v = self.v(x).view(b, t, h, d).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * d**-0.5
            y = att.softmax(dim=-1) @ v
        elif self.style == "fused":  # timm: reshape to (3, B, heads, T, d), unbind
            qkv = self.qkv(x).reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            att = torch.matmul(q, k.transpose(-2, -1)) / d**0.5
            y = torch.matmul(F.softmax(att, dim=-1), v)
        else:  # "chunk": chunk along channels, scaled_dot_product_attention
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            q, k, v = (z.reshape(b, t, h, d).permute(0, 2, 1, 3) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class ViTLike(nn.Module):
    """Patch embedding, CLS token, position embedding, pre-norm blocks (attention + MLP)."""

    def __init__(self, style: str, dim: int = 8, heads: int = 2, depth: int = 2) -> None:
        super().__init__()
        self.style = style
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 5, dim) * 0.5)
        self.n1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.n2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        if style == "mha":
            self.attn = nn.ModuleList(
                nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(depth)
            )
        else:
            self.attn = nn.ModuleList(Attention(dim, heads, style) for _ in range(depth))
        self.fc1 = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(depth))
        self.fc2 = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for i in range(len(self.attn)):
            h = self.n1[i](x)
            if self.style == "mha":
                x = x + self.attn[i](h, h, h, need_weights=False)[0]
            else:
                x = x + self.attn[i](h)
            x = x + self.fc2[i](F.gelu(self.fc1[i](self.n2[i](x))))
        return self.head(self.norm(x)[:, 0])


class Recurrent(nn.Module):
    """Embedding Linear -> LSTM / GRU -> Linear head, in a few layouts."""

    def __init__(self, kind: str, layers: int = 1, bidirectional: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.emb = nn.Linear(4, 6)
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(6, 5, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(5 * (2 if bidirectional else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(torch.tanh(self.emb(x)))
        if self.kind == "gru_state":  # read the final state h_n
            return self.head(state[-1])
        return self.head(out.mean(1) + out[:, -1])


#: name -> (factory, input shape)
MODERN = {
    "se_none": (lambda: SENet("none"), (3, 8, 8)),
    "se_view": (lambda: SENet("view"), (3, 8, 8)),
    "se_unsqueeze": (lambda: SENet("unsqueeze"), (3, 8, 8)),
    "se_expand": (lambda: SENet("expand"), (3, 8, 8)),
    "convnext": (ConvNeXtNet, (3, 8, 8)),
    "unet": (UNet, (3, 16, 16)),
    "flatten_head": (FlattenHead, (3, 8, 8)),
    "tokens": (TokenMixerNet, (3, 8, 8)),
    "groupnorm": (GroupNormNet, (3, 8, 8)),
    "vit_mha": (lambda: ViTLike("mha"), (3, 8, 8)),
    "vit_separate": (lambda: ViTLike("separate"), (3, 8, 8)),
    "vit_fused": (lambda: ViTLike("fused"), (3, 8, 8)),
    "vit_chunk": (lambda: ViTLike("chunk"), (3, 8, 8)),
    "lstm": (lambda: Recurrent("lstm"), (7, 4)),
    "gru_state": (lambda: Recurrent("gru_state"), (7, 4)),
    "gru_deep": (lambda: Recurrent("gru", layers=2, bidirectional=True), (7, 4)),
}


def make_modern(name: str, batch: int = 4, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The model (non-trivial norm parameters and statistics) and a batch of inputs."""
    torch.manual_seed(seed)
    factory, shape = MODERN[name]
    model = factory()
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model, torch.randn(batch, *shape, generator=gen)
