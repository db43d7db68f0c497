"""Audio classifier: the pre-trained encoder, a pooled clip embedding and a linear head.

Dimensions: N = clips, L = patches, D = width, C = classes.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .encoder import AudioEncoder, EncoderConfig

__all__ = ["POOLING_MODES", "AudioClassifier"]

# Names as in official fine-tuned checkpoints' ``prediction_mode``.
POOLING_MODES = ("CLS_TOKEN", "MEAN_POOLING")


class AudioClassifier(nn.Module):
    """``head(fc_norm(pool(encoder(fbank))))``.

    Args:
        pooling: ``CLS_TOKEN`` (the CLS output) or ``MEAN_POOLING`` (mean of the patch outputs).
        use_fc_norm: LayerNorm on the pooled embedding before the head (official default).
    """

    def __init__(self, encoder_cfg: EncoderConfig, num_classes: int, pooling: str = "CLS_TOKEN", use_fc_norm: bool = True):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.pooling = pooling
        self.encoder = AudioEncoder(encoder_cfg)
        self.fc_norm = nn.LayerNorm(encoder_cfg.embed_dim, eps=1e-6) if use_fc_norm else None
        self.head = nn.Linear(encoder_cfg.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def embed(self, fbank: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, 1, T, M) -> (N, D) pooled clip embeddings (before fc_norm)."""
        x = self.encoder(fbank, mask).x  # (N, 1 + K, D)
        return x[:, 0] if self.pooling == "CLS_TOKEN" else x[:, 1:].mean(dim=1)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C) logits."""
        if self.fc_norm is not None:
            pooled = self.fc_norm(pooled)
        return self.head(pooled)

    def forward(self, fbank: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, 1, T, M) normalised log-mel -> (N, C) logits; ``mask`` (N, L) drops patches."""
        return self.classify(self.embed(fbank, mask))
