"""The frame-level detection model: the pre-trained encoder, one vector per patch row, a linear head.

fbank (N, 1, T, M) -> encoder -> patch tokens (N, R * Fq, D), time-major -> one vector per
160 ms row -> LayerNorm -> linear -> (N, R, C) row logits -> linear interpolation in time from
row centres to frame centres ->
(N, F, C) frame logits at ``hop`` (F = R x 160 ms / hop).

A row's vector (``row_pooling``): ``mean``, the mean of its Fq frequency patches, (N, R, D), as
``extract_features(..., granularity="time")``; or ``concat``, its Fq patches side by side,
(N, R, Fq * D), which keeps where in frequency each patch's content lies (what tells a low hum
from a high whistle when the encoder is frozen) at Fq times the head's parameters.

Clip-level (weak) predictions pool the frame probabilities with linear-softmax pooling,
``sum_t p_t^2 / sum_t p_t`` per class: loud frames count most, and a clip without activity
scores near 0 (Wang, Li and Metze, ICASSP 2019).

Dimensions: N clips, T fbank frames, M mel bins, R patch rows, Fq frequency patches,
D width, F output frames, C classes. No fairseq needed.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.encoder import EncoderConfig
from ..models.encoder_head import EncoderWithHead

__all__ = ["rows_to_frames", "linear_softmax_pool", "FrameDetector", "ROW_POOLINGS"]

ROW_POOLINGS = ("mean", "concat")


def rows_to_frames(row_logits: torch.Tensor, frames_per_row: int) -> torch.Tensor:
    """(N, R, C) per-row values -> (N, R * k, C), linearly interpolated between row centres.

    Frame i's centre, ``(i + 0.5) / k`` rows, is read at that position of the row sequence
    (row r's value sits at r + 0.5); before the first and after the last centre the edge value is kept.
    """
    if frames_per_row == 1:
        return row_logits
    x = row_logits.transpose(1, 2)  # (N, R, C) -> (N, C, R)
    x = F.interpolate(x, scale_factor=frames_per_row, mode="linear", align_corners=False)  # -> (N, C, R * k)
    return x.transpose(1, 2)  # -> (N, R * k, C)


def linear_softmax_pool(probs: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """(N, F, C) frame probabilities -> (N, C) clip probabilities, ``sum p^2 / sum p``."""
    return (probs * probs).sum(dim=1) / probs.sum(dim=1).clamp_min(eps)


class FrameDetector(EncoderWithHead):
    """Frame logits for C classes from the encoder's patch rows.

    Args:
        frames_per_row: output frames per 160 ms patch row (4 for a 40 ms hop).
        freeze_encoder: the frozen-encoder (linear) variant: only the norm and head train.
        frozen_encoder_eval_mode: a frozen encoder also stays in eval mode.
        row_pooling: ``mean`` (D features per row) or ``concat`` (Fq * D); see the module docstring.
    """

    def __init__(
        self,
        encoder_cfg: EncoderConfig,
        num_classes: int,
        frames_per_row: int = 4,
        freeze_encoder: bool = False,
        frozen_encoder_eval_mode: bool = True,
        row_pooling: str = "mean",
    ):
        if num_classes < 1 or frames_per_row < 1:
            raise ValueError(f"num_classes and frames_per_row must be positive, got {num_classes}, {frames_per_row}")
        if row_pooling not in ROW_POOLINGS:
            raise ValueError(f"row_pooling must be one of {ROW_POOLINGS}, got {row_pooling!r}")
        super().__init__(encoder_cfg, freeze_encoder, frozen_encoder_eval_mode)
        self.row_pooling = row_pooling
        width = encoder_cfg.embed_dim * (self.encoder.freq_patches if row_pooling == "concat" else 1)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.frames_per_row = frames_per_row

    def row_features(self, fbank: torch.Tensor) -> torch.Tensor:
        """(N, 1, T, M) normalised fbank -> (N, R, D) (``mean``) or (N, R, Fq * D) (``concat``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            tokens = self.encoder(fbank).x[:, 1:]  # (N, 1 + R * Fq, D) -> (N, R * Fq, D)
        n, length, d = tokens.shape
        fq = self.encoder.freq_patches
        rows = tokens.reshape(n, length // fq, fq, d)  # -> (N, R, Fq, D)
        return rows.mean(dim=2) if self.row_pooling == "mean" else rows.flatten(2)  # -> (N, R, D) or (N, R, Fq * D)

    def row_logits(self, fbank: torch.Tensor) -> torch.Tensor:
        """(N, 1, T, M) -> (N, R, C) logits, one per 160 ms patch row."""
        return self.head(self.norm(self.row_features(fbank)))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """(N, 1, T, M) normalised fbank -> (N, F, C) frame logits at the model's hop."""
        if fbank.dim() == 3:
            fbank = fbank.unsqueeze(1)  # (N, T, M) -> (N, 1, T, M)
        return rows_to_frames(self.row_logits(fbank), self.frames_per_row)

    @staticmethod
    def clip_probabilities(frame_logits: torch.Tensor, pooling: Optional[str] = "linear_softmax") -> torch.Tensor:
        """(N, F, C) frame logits -> (N, C) clip probabilities (``linear_softmax`` or ``max``)."""
        probs = torch.sigmoid(frame_logits.float())
        if pooling == "max":
            return probs.max(dim=1).values
        if pooling == "linear_softmax":
            return linear_softmax_pool(probs)
        raise ValueError(f"clip pooling must be 'linear_softmax' or 'max', got {pooling!r}")
