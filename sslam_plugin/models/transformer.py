"""Post-norm transformer block of the EAT/data2vec 2.0 audio encoder.

Dimensions: N = sequences, S = tokens, D = width, H = heads.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Attention", "Mlp", "DropPath", "PostNormBlock"]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (names as in timm)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, S, D) -> (N, S, D)."""
        n, s, d = x.shape
        qkv = self.qkv(x).reshape(n, s, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, H, S, D/H)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(n, s, d)  # (N, H, S, D/H) -> (N, S, D)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sequence."""

    def __init__(self, prob: float):
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        keep = 1.0 - self.prob
        noise = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * noise / keep


class PostNormBlock(nn.Module):
    """``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``.

    Also returns the representation used as this layer's teacher target: the
    MLP output before the residual (``ffn_targets``, the official default) or
    the block output.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        post_mlp_dropout: float = 0.0,
        drop_path: float = 0.0,
        ffn_targets: bool = True,
    ):
        super().__init__()
        self.ffn_targets = ffn_targets
        self.attn = Attention(dim, num_heads, attention_dropout, dropout)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), activation_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.post_mlp_dropout = nn.Dropout(post_mlp_dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N, S, D) -> (output (N, S, D), target representation (N, S, D))."""
        x = self.norm1(x + self.drop_path(self.attn(x)))
        ffn = self.mlp(x)
        x = self.norm2(x + self.drop_path(self.post_mlp_dropout(ffn)))
        return x, (ffn if self.ffn_targets else x)
