"""A small Vision Transformer for 32×32 images.

Reference: A. Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", ICLR 2021 (patch embedding, CLS token, learned position embedding,
pre-norm encoder blocks, classification from the CLS token). The attention is written out
(one fused q/k/v projection, reshaped to heads) as most published ViTs do, so that its
symmetry is discovered by tracing: see docs/symmetry.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign.errors import ConfigError
from neuralign.models.common import check_positive_int, make_normalize, scale_channels
from neuralign.models.registry import register_model

__all__ = ["ViT", "vit"]


class Attention(nn.Module):
    """Multi-head self-attention: fused q/k/v Linear, softmax(q kᵀ / √d) v, output Linear."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        d = c // self.heads
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = F.softmax((q @ k.transpose(-2, -1)) * d**-0.5, dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-norm encoder block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (GELU)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Patch embedding (a strided conv), CLS token, learned position embedding, ``depth``
    pre-norm blocks, final LayerNorm, linear head on the CLS token.

    Defaults (``dim=64, depth=4, heads=4, mlp_ratio=2``, patches of 4 on 32×32 inputs: 64
    tokens + CLS) give about 0.14M parameters.

    Args:
        num_classes: Number of output classes.
        in_channels: Number of input image channels.
        image_size: Side of the (square) input images; must be a multiple of ``patch``.
        patch: Side of a patch.
        dim: Embedding width (scaled by ``width``; rounded to a multiple of ``heads``).
        depth: Number of encoder blocks.
        heads: Attention heads per block.
        mlp_ratio: Hidden units of each block's MLP per embedding unit.
        width: Width multiplier (``width=0.25`` is the tiny test variant).
        mean: Per-channel input mean (default 0.5 per channel).
        std: Per-channel input standard deviation (default 0.5 per channel).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        image_size: int = 32,
        patch: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        width: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        num_classes = check_positive_int(num_classes, "num_classes")
        in_channels = check_positive_int(in_channels, "in_channels")
        image_size = check_positive_int(image_size, "image_size")
        patch = check_positive_int(patch, "patch")
        heads = check_positive_int(heads, "heads")
        depth = check_positive_int(depth, "depth")
        if image_size % patch:
            raise ConfigError(f"image_size {image_size} is not a multiple of patch {patch}")
        dim = max(heads, scale_channels(dim, width) // heads * heads)
        hidden = max(1, round(dim * mlp_ratio))
        tokens = (image_size // patch) ** 2 + 1
        self.normalize = make_normalize(in_channels, mean, std)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        # Layers keep PyTorch's default initialisation (the zoo trains with SGD); the CLS
        # token and position embedding start as in Dosovitskiy et al. (truncated normal).
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        """Map pixels ``(N, C, image_size, image_size)`` in ``[0, 1]`` to logits."""
        x = self.patch_embed(self.normalize(x)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register_model("vit", tiny={"width": 0.25, "depth": 2})
def vit(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    image_size: int = 32,
    patch: int = 4,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    width: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ViT:
    """Build :class:`ViT` (about 0.14M parameters with the defaults)."""
    return ViT(
        num_classes,
        in_channels,
        image_size=image_size,
        patch=patch,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=mlp_ratio,
        width=width,
        mean=mean,
        std=std,
    )
