"""Fixed 2-D sine-cosine positional embeddings for the (time x frequency) patch grid."""

from __future__ import annotations

import torch

__all__ = ["sincos_1d", "sincos_2d"]


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Transformer sine-cosine code of ``positions``.

    Args:
        positions: (n,) positions.

    Returns:
        (n, dim) float32: sines in the first half, cosines in the second.
    """
    if dim % 2:
        raise ValueError(f"sincos embedding dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    angles = positions.double().reshape(-1, 1) * omega.reshape(1, -1)  # (n, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Positional code of a (rows, cols) grid in time-major order.

    As in MAE and the official EAT checkpoints, the first half of the channels
    encodes the column (frequency) index and the second half the row (time) index.

    Returns:
        (rows * cols, dim) float32.
    """
    if dim % 4:
        raise ValueError(f"2-D sincos embedding dim must be a multiple of 4, got {dim}")
    row = torch.arange(rows).repeat_interleave(cols)  # (rows*cols,) time index
    col = torch.arange(cols).repeat(rows)  # (rows*cols,) frequency index
    return torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1)
