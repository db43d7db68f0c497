"""The light CNN decoder that predicts teacher targets on the full patch grid.

The student's kept patch outputs are put back on the (rows x cols) grid, masked
positions filled with small Gaussian noise, then blocks of
[grouped Conv2d -> LayerNorm over channels -> GELU] with residual connections,
and a final Linear back to the encoder width.

Dimensions: N = sequences, L = rows * cols patches, K = kept patches, D = width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mask_index import scatter_rows

__all__ = ["DecoderConfig", "ConvDecoder2d", "scatter_to_grid"]


@dataclass
class DecoderConfig:
    dim: int = field(default=768, metadata={"help": "decoder channels"})
    layers: int = field(default=6, metadata={"help": "conv blocks"})
    kernel_size: int = field(default=3, metadata={"help": "odd conv kernel size"})
    groups: int = field(default=16, metadata={"help": "conv groups"})
    residual: bool = field(default=True, metadata={"help": "residual connection around each block"})
    mask_noise_std: float = field(default=0.01, metadata={"help": "std of the noise at masked positions"})

    def validate(self, embed_dim: int) -> None:
        if self.layers < 1 or self.dim < 1:
            raise ValueError(f"decoder.layers and decoder.dim must be positive, got {self.layers}, {self.dim}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"decoder.kernel_size must be odd, got {self.kernel_size}")
        for channels in (embed_dim, self.dim):
            if channels % self.groups:
                raise ValueError(f"decoder.groups ({self.groups}) must divide {channels} channels")


def scatter_to_grid(
    kept: torch.Tensor,
    mask: torch.Tensor,
    noise_std: float,
    generator: Optional[torch.Generator] = None,
    kept_index: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Put kept-patch outputs back at their grid positions; noise elsewhere.

    Args:
        kept: (N, K, D) outputs for the kept patches, in grid order.
        mask: (N, L) bool, True = masked.
        kept_index: (N, K) the kept positions, ascending (the fast step's
            :class:`.mask_index.MaskIndex`): an indexed scatter, same result.

    Returns:
        (N, L, D).
    """
    n, length = mask.shape
    full = torch.empty(n, length, kept.shape[-1], dtype=kept.dtype, device=kept.device)
    if noise_std > 0:
        noise = torch.randn(full.shape, generator=generator, device=kept.device, dtype=torch.float32)
        full.copy_(noise * noise_std)
    else:
        full.zero_()
    if kept_index is not None:
        return scatter_rows(full, kept_index, kept)
    return full.masked_scatter(~mask.unsqueeze(-1), kept)


class ConvDecoder2d(nn.Module):
    def __init__(self, cfg: DecoderConfig, embed_dim: int):
        super().__init__()
        cfg.validate(embed_dim)
        self.cfg = cfg
        # Each block is a one-conv Sequential so parameter names match official
        # checkpoints (decoder.blocks.<i>.0.weight); the norm and GELU have no weights.
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    embed_dim if i == 0 else cfg.dim,
                    cfg.dim,
                    kernel_size=cfg.kernel_size,
                    padding=cfg.kernel_size // 2,
                    groups=cfg.groups,
                )
            )
            for i in range(cfg.layers)
        )
        self.proj = nn.Linear(cfg.dim, embed_dim)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """(N, L, D) on a (rows, cols) grid -> (N, L, D) predictions."""
        n, length, d = x.shape
        rows, cols = grid
        if rows * cols != length:
            raise ValueError(f"grid {grid} does not hold {length} patches")
        x = x.transpose(1, 2).reshape(n, d, rows, cols)  # (N, L, D) -> (N, D, rows, cols)
        for block in self.blocks:
            y = block(x)
            # LayerNorm over channels, no affine parameters (as the official decoder)
            y = F.layer_norm(y.transpose(1, 3), (y.shape[1],)).transpose(1, 3)
            y = F.gelu(y)
            x = y + x if self.cfg.residual and y.shape[1] == x.shape[1] else y
        x = x.reshape(n, x.shape[1], length).transpose(1, 2)  # -> (N, L, C)
        return self.proj(x)
