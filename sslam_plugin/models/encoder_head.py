"""What every model that puts a trained head on the encoder shares: freezing, weight decay, layer decay."""

from __future__ import annotations

from typing import Dict, Set

import torch.nn as nn

from .encoder import AudioEncoder, EncoderConfig


class EncoderWithHead(nn.Module):
    """An :class:`AudioEncoder` under ``self.encoder`` plus head parameters a subclass adds.

    Args:
        freeze_encoder: linear evaluation: the encoder is not trained and runs
            without gradients (subclasses wrap its call accordingly).
        frozen_encoder_eval_mode: a frozen encoder also stays in eval mode (no
            dropout, no stochastic depth); the official linear evaluation left
            it in training mode.
    """

    def __init__(self, encoder_cfg: EncoderConfig, freeze_encoder: bool = False, frozen_encoder_eval_mode: bool = True):
        super().__init__()
        self.encoder = AudioEncoder(encoder_cfg)  # first, so state-dict order is encoder then head
        self.freeze_encoder = freeze_encoder
        self.frozen_encoder_eval_mode = frozen_encoder_eval_mode
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> "EncoderWithHead":
        super().train(mode)
        if self.freeze_encoder and self.frozen_encoder_eval_mode:
            self.encoder.eval()
        return self

    def no_weight_decay(self) -> Set[str]:
        """Parameters trained without weight decay: the encoder's, and the head's biases and norms."""
        names = {"encoder." + n for n in self.encoder.no_weight_decay()}
        return names | {n for n, p in self.named_parameters() if not n.startswith("encoder.") and p.dim() <= 1}

    def layer_depth(self, name: str) -> int:
        """Depth for layer-wise lr decay: the encoder's, then depth + 1 for everything on top."""
        if name.startswith("encoder."):
            return self.encoder.layer_depth(name[len("encoder."):])
        return self.encoder.cfg.depth + 1

    def lr_scales(self, layer_decay: float, decay_front_end: bool = False) -> Dict[str, float]:
        """Layer-wise lr decay: the lr scale of every parameter, by name.

        The official fine-tuning rule: block i of D gets ``layer_decay ** (D - i)``;
        the front end (patch embedding, CLS token, input norm) and the head keep 1.
        ``decay_front_end``: the front end is layer 0 and gets ``layer_decay ** (D + 1)``, as in BEiT.
        """
        depth = self.encoder.cfg.depth
        scales = {}
        for name, _ in self.named_parameters():
            layer = self.layer_depth(name)
            if layer == 0 and not decay_front_end:
                layer = depth + 1
            scales[name] = layer_decay ** (depth + 1 - layer)
        return scales
