"""Clip-level evaluation metrics over a whole split (not averaged per batch)."""

from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["average_precision", "mean_average_precision", "accuracy"]


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class average precision, as scikit-learn's ``average_precision_score``.

    AP = sum over score thresholds of (R_n - R_{n-1}) * P_n; tied scores form
    one threshold.

    Args:
        scores: (N, C) any monotone scores (logits or probabilities).
        targets: (N, C) binary (or soft; > 0.5 counts as positive).

    Returns:
        (C,) float64 AP per class; NaN for a class with no positive clip.
    """
    if scores.shape != targets.shape or scores.dim() != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must both be (clips, classes)")
    scores = scores.double().cpu()
    positive = (targets > 0.5).double().cpu()
    ap = torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    for c in range(scores.shape[1]):
        total_pos = positive[:, c].sum()
        if total_pos == 0:
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        s, y = scores[order, c], positive[order, c]
        tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
        # keep the last index of each run of tied scores: one threshold per distinct score
        last = torch.ones_like(s, dtype=torch.bool)
        last[:-1] = s[1:] != s[:-1]
        tp, fp = tp[last], fp[last]
        precision, recall = tp / (tp + fp), tp / total_pos
        previous = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
        ap[c] = ((recall - previous) * precision).sum()
    return ap


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> Tuple[float, torch.Tensor]:
    """(mAP over classes that have a positive clip, per-class AP)."""
    ap = average_precision(scores, targets)
    valid = ~torch.isnan(ap)
    return (float(ap[valid].mean()) if valid.any() else float("nan")), ap


def accuracy(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy; ``targets`` are (N,) class indices or (N, C) one-hot/soft."""
    labels = targets.argmax(dim=1) if targets.dim() == 2 else targets
    return float((scores.argmax(dim=1) == labels.to(scores.device)).float().mean())
