"""Audio classifier: the pre-trained encoder, a pooled clip embedding and a linear head.

Dimensions: N = clips, L = patches, D = width, C = classes.
"""

from __future__ import annotations

from typing import Dict, Optional, Set, Tuple

import torch
import torch.nn as nn

from ..vocabulary import parse_pooling
from .encoder import AudioEncoder, EncoderConfig

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


class AudioClassifier(nn.Module):
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
        super().__init__()
        pooling = parse_pooling(pooling)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.pooling = pooling
        self.encoder = AudioEncoder(encoder_cfg)
        self.fc_norm, self.head = classification_head(encoder_cfg.embed_dim, num_classes, use_fc_norm)
        self.freeze_encoder = freeze_encoder
        self.frozen_encoder_eval_mode = frozen_encoder_eval_mode
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> "AudioClassifier":
        super().train(mode)
        if self.freeze_encoder and self.frozen_encoder_eval_mode:
            self.encoder.eval()
        return self

    def no_weight_decay(self) -> Set[str]:
        """Parameters trained without weight decay: the encoder's, the head's bias and fc_norm."""
        names = {"encoder." + n for n in self.encoder.no_weight_decay()}
        return names | {n for n, p in self.named_parameters() if not n.startswith("encoder.") and p.dim() <= 1}

    def layer_depth(self, name: str) -> int:
        """Depth for layer-wise lr decay: the encoder's, then depth + 1 for fc_norm and the head."""
        if name.startswith("encoder."):
            return self.encoder.layer_depth(name[len("encoder."):])
        return self.encoder.cfg.depth + 1

    def lr_scales(self, layer_decay: float, decay_front_end: bool = False) -> Dict[str, float]:
        """Layer-wise lr decay: the lr scale of every parameter, by name.

        The official fine-tuning rule: block i of D gets ``layer_decay ** (D - i)``;
        the front end (patch embedding, CLS token, input norm), fc_norm and the
        head keep 1. ``decay_front_end``: the front end is layer 0 and gets
        ``layer_decay ** (D + 1)``, as in BEiT.
        """
        depth = self.encoder.cfg.depth
        scales = {}
        for name, _ in self.named_parameters():
            layer = self.layer_depth(name)
            if layer == 0 and not decay_front_end:
                layer = depth + 1
            scales[name] = layer_decay ** (depth + 1 - layer)
        return scales

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
