"""The audio ViT encoder shared by the student, the EMA teacher and inference.

fbank (N, 1, T, M) -> 16x16 patches (N, L, D), L = (T/16) * (M/16), time-major
-> + fixed 2-D sine-cosine positions -> [optionally keep a subset of patches]
-> prepend one CLS token -> LayerNorm -> post-norm transformer blocks.

Dimensions: N = clips, T = frames, M = mel bins, L = patches, K = kept patches,
D = width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Set, Tuple

import torch
import torch.nn as nn

from .positions import sincos_2d
from .transformer import PostNormBlock

__all__ = ["EncoderConfig", "EncoderOutput", "AudioEncoder", "gather_kept"]


@dataclass
class EncoderConfig:
    embed_dim: int = field(default=768, metadata={"help": "transformer width"})
    depth: int = field(default=12, metadata={"help": "number of transformer blocks"})
    num_heads: int = field(default=12, metadata={"help": "attention heads"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "MLP hidden width / width"})
    patch_size: int = field(default=16, metadata={"help": "square patch side, in frames and mel bins"})
    num_mel_bins: int = field(default=128, metadata={"help": "mel bins of the input"})
    max_time_patches: int = field(
        default=768, metadata={"help": "longest input in patch rows (size of the position table)"}
    )
    norm_eps: float = field(default=1e-6, metadata={"help": "LayerNorm epsilon"})
    dropout: float = field(default=0.0, metadata={"help": "dropout after attention projection"})
    attention_dropout: float = field(default=0.0, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout inside the MLP"})
    post_mlp_dropout: float = field(default=0.0, metadata={"help": "dropout on the MLP output"})
    start_drop_path: float = field(default=0.0, metadata={"help": "stochastic depth of the first block"})
    end_drop_path: float = field(default=0.0, metadata={"help": "stochastic depth of the last block"})
    end_of_block_targets: bool = field(
        default=False,
        metadata={"help": "teacher targets from block outputs instead of MLP outputs (official: false)"},
    )

    def validate(self) -> None:
        for name in ("embed_dim", "depth", "num_heads", "patch_size", "num_mel_bins", "max_time_patches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"encoder.{name} must be positive, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"encoder.embed_dim ({self.embed_dim}) must be divisible by encoder.num_heads ({self.num_heads})"
            )
        if self.embed_dim % 4:
            raise ValueError(f"encoder.embed_dim must be a multiple of 4, got {self.embed_dim}")
        if self.num_mel_bins % self.patch_size:
            raise ValueError(
                f"encoder.num_mel_bins ({self.num_mel_bins}) must be a multiple of encoder.patch_size ({self.patch_size})"
            )


class EncoderOutput(NamedTuple):
    x: torch.Tensor  # (N, 1 + K, D): CLS first, then the kept patches
    layer_targets: List[torch.Tensor]  # depth x (N, K, D), CLS removed (empty unless asked for)


def gather_kept(patches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the unmasked patches of each row, in their original order.

    Args:
        patches: (N, L, D).
        mask: (N, L) bool, True = masked; every row must keep the same number.

    Returns:
        (N, K, D).
    """
    kept_per_row = (~mask).sum(dim=1)
    if not bool((kept_per_row == kept_per_row[0]).all()):
        raise ValueError("every mask row must keep the same number of patches")
    num_keep = int(kept_per_row[0])
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)[:, :num_keep]  # (N, K)
    return torch.gather(patches, 1, order.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))


class PatchEmbed(nn.Module):
    """Non-overlapping 16x16 patches of a one-channel (time x frequency) image."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.proj(fbank)  # (N, 1, T, M) -> (N, D, T/16, M/16)
        return x.flatten(2).transpose(1, 2)  # -> (N, L, D), time-major


class AudioEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.freq_patches = cfg.num_mel_bins // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.register_buffer(
            "pos_embed",
            sincos_2d(cfg.embed_dim, cfg.max_time_patches, self.freq_patches).unsqueeze(0),
            persistent=True,
        )  # (1, max_time_patches * freq_patches, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.input_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        drop_path = torch.linspace(cfg.start_drop_path, cfg.end_drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            PostNormBlock(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                cfg.norm_eps,
                cfg.dropout,
                cfg.attention_dropout,
                cfg.activation_dropout,
                cfg.post_mlp_dropout,
                drop_path[i],
                ffn_targets=not cfg.end_of_block_targets,
            )
            for i in range(cfg.depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token)

    # ------------------------------------------------- optimiser parameter groups
    def no_weight_decay(self) -> Set[str]:
        """Parameters trained without weight decay: norms, biases and the CLS token."""
        return {name for name, p in self.named_parameters() if p.dim() <= 1 or name == "cls_token"}

    def layer_depth(self, name: str) -> int:
        """Depth of a parameter for layer-wise lr decay: front end 0, block i -> i + 1."""
        parts = name.split(".")
        return int(parts[1]) + 1 if parts[0] == "blocks" else 0

    def patch_grid(self, frames: int) -> Tuple[int, int]:
        """(time patches, frequency patches) for an input of ``frames`` frames."""
        if frames % self.cfg.patch_size:
            raise ValueError(f"input length {frames} frames is not a multiple of the patch size {self.cfg.patch_size}")
        rows = frames // self.cfg.patch_size
        if rows > self.cfg.max_time_patches:
            raise ValueError(
                f"input of {frames} frames needs {rows} patch rows; the encoder supports at most "
                f"{self.cfg.max_time_patches} (encoder.max_time_patches)"
            )
        return rows, self.freq_patches

    def embed(self, fbank: torch.Tensor) -> torch.Tensor:
        """Patches plus positions.

        Args:
            fbank: (N, 1, T, M) or (N, T, M) normalised log-mel features.

        Returns:
            (N, L, D).
        """
        if fbank.dim() == 3:
            fbank = fbank.unsqueeze(1)
        if fbank.dim() != 4 or fbank.shape[1] != 1 or fbank.shape[-1] != self.cfg.num_mel_bins:
            raise ValueError(
                f"expected fbank of shape (batch, 1, frames, {self.cfg.num_mel_bins}), got {tuple(fbank.shape)}"
            )
        rows, cols = self.patch_grid(fbank.shape[2])
        x = self.patch_embed(fbank)
        return x + self.pos_embed[:, : rows * cols].to(x.dtype)

    def contextualize(self, patches: torch.Tensor, return_targets: bool = False) -> EncoderOutput:
        """Prepend CLS, normalise and run the blocks.

        Args:
            patches: (N, K, D) embedded patches (all of them, or the kept subset).
        """
        cls = self.cls_token.expand(patches.shape[0], -1, -1).to(patches.dtype)
        x = self.input_norm(torch.cat([cls, patches], dim=1))  # (N, 1 + K, D)
        layer_targets: List[torch.Tensor] = []
        for block in self.blocks:
            x, target = block(x)
            if return_targets:
                layer_targets.append(target[:, 1:])
        return EncoderOutput(x, layer_targets)

    def forward(
        self,
        fbank: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        return_targets: bool = False,
    ) -> EncoderOutput:
        """Encode (N, 1, T, M) features; with ``mask`` (N, L) only kept patches are encoded."""
        patches = self.embed(fbank)
        if mask is not None:
            patches = gather_kept(patches, mask)
        return self.contextualize(patches, return_targets)
