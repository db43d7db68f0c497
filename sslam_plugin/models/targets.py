"""Teacher targets from the teacher's per-layer representations.

Each of the top-K layer outputs (CLS removed) is instance-normalised over tokens,
the K are averaged, and the average is layer-normalised over channels.

Dimensions: N = clips, L = patches, D = width.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["average_layer_targets", "utterance_targets", "compute_var"]


def average_layer_targets(
    layers: Sequence[torch.Tensor],
    top_k: int,
    instance_norm_layers: bool = True,
    layer_norm_layers: bool = False,
    layer_norm_final: bool = True,
) -> torch.Tensor:
    """Average of the normalised top-``top_k`` layers.

    Args:
        layers: depth x (N, L, D) teacher representations, first layer first.
        top_k: how many of the last layers to average (capped at the depth).

    Returns:
        (N, L, D) float32 targets.
    """
    if not layers:
        raise ValueError("no teacher layers to build targets from")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    total = None
    chosen = layers[-top_k:]
    for layer in chosen:
        y = layer.float()
        if instance_norm_layers:
            y = F.instance_norm(y.transpose(1, 2)).transpose(1, 2)  # normalise each channel over tokens
        if layer_norm_layers:
            y = F.layer_norm(y, y.shape[-1:])
        total = y if total is None else total + y
    y = total / len(chosen)
    if layer_norm_final:
        y = F.layer_norm(y, y.shape[-1:])
    return y


def utterance_targets(layers: Sequence[torch.Tensor], top_k: int) -> torch.Tensor:
    """Clip-level target: the mean over patches of the top-``top_k`` target.

    Returns:
        (N, D).
    """
    return average_layer_targets(layers, top_k).mean(dim=1)


def compute_var(y: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the per-channel std: near 0 means collapse."""
    y = y.reshape(-1, y.shape[-1]).float()
    return torch.sqrt(y.var(dim=0) + 1e-6).mean()
