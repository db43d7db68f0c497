"""Audio classifier: the pre-trained encoder, a pooled clip embedding and a linear head.

Dimensions: N = clips, L = patches, D = width, C = classes.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..vocabulary import parse_pooling
from .encoder import EncoderConfig
from .encoder_head import EncoderWithHead

__all__ = ["pool", "classify", "AudioClassifier"]


def pool(tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N, 1 + L, D) tokens, CLS first -> (N, D) clip embeddings (``pooling``: see :mod:`sslam_plugin.vocabulary`)."""
    return tokens[:, 0] if pooling == "cls" else tokens[:, 1:].mean(dim=1)


def classify(pooled: torch.Tensor, fc_norm: Optional[nn.LayerNorm], head: nn.Linear) -> torch.Tensor:
    """(N, D) pooled embeddings -> (N, C) logits: ``head(fc_norm(pooled))``."""
    return head(fc_norm(pooled) if fc_norm is not None else pooled)


def classification_head(
    dim: int, num_classes: int, use_fc_norm: bool = True, generator: Optional[torch.Generator] = None
) -> Tuple[Optional[nn.LayerNorm], nn.Linear]:
    """The official fine-tuning head: ``fc_norm`` (LayerNorm, eps 1e-6; optional) and a linear layer
    with trunc-normal(0.02) weights and zero bias (``generator``: draw them from it, not the global one)."""
    fc_norm = nn.LayerNorm(dim, eps=1e-6) if use_fc_norm else None
    head = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(head.weight, std=0.02, generator=generator)
    nn.init.zeros_(head.bias)
    return fc_norm, head


class AudioClassifier(EncoderWithHead):
    """``head(fc_norm(pool(encoder(fbank))))``.

    Args:
        pooling: ``"cls"`` (the CLS output) or ``"mean"`` (mean of the patch outputs).
        use_fc_norm: LayerNorm on the pooled embedding before the head (official default).
        freeze_encoder: linear evaluation: the encoder is not trained and runs
            without gradients.
        frozen_encoder_eval_mode: a frozen encoder also stays in eval mode (no
            dropout, no stochastic depth); the official linear evaluation left
            it in training mode.
    """

    def __init__(
        self,
        encoder_cfg: EncoderConfig,
        num_classes: int,
        pooling: str = "cls",
        use_fc_norm: bool = True,
        freeze_encoder: bool = False,
        frozen_encoder_eval_mode: bool = True,
    ):
        pooling = parse_pooling(pooling)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        super().__init__(encoder_cfg, freeze_encoder, frozen_encoder_eval_mode)
        self.pooling = pooling
        self.fc_norm, self.head = classification_head(encoder_cfg.embed_dim, num_classes, use_fc_norm)

    def embed(self, fbank: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, 1, T, M) -> (N, D) pooled clip embeddings (before fc_norm)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            return pool(self.encoder(fbank, mask).x, self.pooling)  # (N, 1 + K, D) -> (N, D)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, C) logits."""
        return classify(pooled, self.fc_norm, self.head)

    def forward(self, fbank: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, 1, T, M) normalised log-mel -> (N, C) logits; ``mask`` (N, L) drops patches."""
        return self.classify(self.embed(fbank, mask))
