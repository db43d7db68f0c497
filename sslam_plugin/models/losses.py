"""The pre-training objectives in one place: regression of student outputs on teacher targets."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .mask_index import gather_from_clips, gather_rows

__all__ = ["regression_loss", "patch_loss", "utterance_loss"]


def regression_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    beta: float = 0.0,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Per-element loss, ``mse / sqrt(D)`` by default (smooth L1 when ``beta`` > 0).

    Args:
        pred: (..., D) predictions (cast to float32).
        target: (..., D) targets of the same shape.

    Returns:
        (n, D) per-element losses, n = product of the leading dimensions.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    d = pred.shape[-1]
    x = pred.reshape(-1, d).float()
    y = target.reshape(-1, d).float()
    if beta == 0:
        loss = F.mse_loss(x, y, reduction="none")
    else:
        loss = F.smooth_l1_loss(x, y, reduction="none", beta=beta)
    return loss * (scale if scale is not None else 1.0 / math.sqrt(d))


# --------------------------------------------------------------- the objectives
# Stage 1 (EAT) trains two terms, stage 2 (SSLAM) five; each is a sum, and the
# trainer divides the weighted total by the number of masked patches:
#
#   patch             patch_loss(student patches of A, teacher patch targets of A)
#   utterance         utterance_loss(student CLS of A, mean teacher target of A)
#   patch_mixed       patch_loss(student patches of M, teacher patch targets of M)
#   utterance_mixed   utterance_loss(student CLS of M, mean teacher target of M)
#   source_retention  patch_loss(student patches of M, SRL targets: the mean of
#                     A's and its partner's targets; see source_retention_targets)
#
# A = the clips, M = their partial mixtures (stage 2); the criterion weights
# the terms (stage 2: source_retention x 2).

def patch_loss(
    pred: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.0,
    scale: Optional[float] = None,
    masked_index: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Regression loss at the masked patches of every copy, summed.

    Args:
        pred: (N, L, D) decoder predictions for N = B * C masked copies.
        targets: (B, L, D) teacher targets of the B clips (repeated per copy here).
        mask: (N, L) bool, True = masked (only those patches count).
        masked_index: (N, L - K) the masked positions of each row, ascending
            (:func:`.mask_index.mask_index`); when given, the same elements are
            gathered by index, with no host sync and no (N, L, D) repeat of the
            targets, and the sum is bit for bit the boolean-mask one.

    Returns:
        float32 scalar.
    """
    copies = _copies(mask, targets.shape[0])
    if masked_index is not None:
        x = gather_rows(pred, masked_index)  # (N, L, D) -> (N, L - K, D)
        y = gather_from_clips(targets, masked_index)  # (B, L, D) -> (N, L - K, D)
        return regression_loss(x, y, beta, scale).sum()
    targets = targets.repeat_interleave(copies, dim=0)  # (B, L, D) -> (N, L, D)
    return regression_loss(pred[mask], targets[mask], beta, scale).sum()


def utterance_loss(
    cls: torch.Tensor,
    targets: torch.Tensor,
    sample_size: torch.Tensor,
    beta: float = 0.0,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Regression of every copy's CLS output on its clip's utterance target, summed.

    Multiplied by ``sample_size`` (the masked patches of the whole student
    batch) so that it keeps its weight after the trainer divides the total by it.

    Args:
        cls: (N, D) CLS outputs; targets: (B, D), repeated per copy here.

    Returns:
        float32 scalar.
    """
    copies = cls.shape[0] // targets.shape[0]
    targets = targets.repeat_interleave(copies, dim=0)  # (B, D) -> (N, D)
    return regression_loss(cls, targets, beta, scale).sum() * sample_size


def _copies(mask: torch.Tensor, clips: int) -> int:
    if mask.dim() != 2 or mask.shape[0] % clips:
        raise ValueError(f"mask must be (clips * copies, patches) with {clips} clips, got {tuple(mask.shape)}")
    return mask.shape[0] // clips
