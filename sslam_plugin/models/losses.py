"""Regression losses between student predictions and teacher targets."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["regression_loss"]


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
