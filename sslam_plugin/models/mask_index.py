"""Masks as index tensors: the fast step's replacement for boolean-mask indexing.

``x[mask]`` with a boolean mask on a GPU must ask the device how many elements
are True before it can allocate its output, which stalls the host until every
queued kernel has run; the plain step does that about a dozen times per step.
Because every copy keeps the same number of patches (inverse block masking
guarantees it), the kept and the masked positions of each row can be listed
once, at the start of a step, as (N, K) and (N, L - K) index tensors, after
which every gather and scatter is an ordinary kernel with a known output shape.
The indices list positions in ascending (grid) order, so a gather returns the
same elements in the same order as boolean indexing: the losses are bit for bit
those of the plain step.

Mask polarity as everywhere: mask (N, L) bool, True = masked (removed from the
student), False = kept.

Dimensions: B = clips, C = copies per clip, N = B * C rows, L = patches,
K = kept patches per row, D = width.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["MaskIndex", "mask_index", "gather_rows", "gather_from_clips", "scatter_rows"]


class MaskIndex(NamedTuple):
    kept: torch.Tensor  # (N, K) int64, kept positions of each row, ascending
    masked: torch.Tensor  # (N, L - K) int64, masked positions of each row, ascending

    def cat(self, other: "MaskIndex") -> "MaskIndex":
        """Rows of ``self`` then rows of ``other`` (same K)."""
        return MaskIndex(torch.cat([self.kept, other.kept]), torch.cat([self.masked, other.masked]))

    def rows(self, start: int, stop: int) -> "MaskIndex":
        """Rows ``start:stop``."""
        return MaskIndex(self.kept[start:stop], self.masked[start:stop])


def mask_index(mask: torch.Tensor) -> MaskIndex:
    """List the kept and masked positions of every row.

    One host-device synchronisation (reading the kept count), made at the start
    of a step where the device queue is short.

    Args:
        mask: (N, L) bool, True = masked; every row must keep the same number.

    Returns:
        MaskIndex with (N, K) kept and (N, L - K) masked positions.
    """
    if mask.dim() != 2:
        raise ValueError(f"expected (rows, patches) mask, got {tuple(mask.shape)}")
    kept_per_row = (~mask).sum(dim=1)
    low, high = torch.stack([kept_per_row.min(), kept_per_row.max()]).tolist()  # the one sync
    if low != high:
        raise ValueError(f"every mask row must keep the same number of patches, got {low} to {high}")
    # A stable sort of (0 = kept, 1 = masked) lists kept then masked positions, each ascending.
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)  # (N, L)
    return MaskIndex(order[:, :low], order[:, low:])


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[n, index[n, j]]`` for every row: (N, L, D), (N, J) -> (N, J, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def gather_from_clips(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather for N = B * C rows from the B clips they copy, without repeating the clips.

    Equal to ``gather_rows(x.repeat_interleave(C, 0), index)`` but never builds
    the (N, L, D) repeat, and its backward adds into (B, L, D) directly.

    Args:
        x: (B, L, D) per clip; index: (B * C, J) positions, copies of a clip adjacent.

    Returns:
        (B * C, J, D).
    """
    clips, length, width = x.shape
    if index.shape[0] % clips:
        raise ValueError(f"{index.shape[0]} index rows are not a whole number of copies of {clips} clips")
    copies = index.shape[0] // clips
    base = torch.arange(clips, device=index.device).repeat_interleave(copies) * length  # (N,)
    flat = (index + base[:, None]).reshape(-1)  # (N * J,) rows of the (B * L, D) view
    return x.reshape(clips * length, width).index_select(0, flat).reshape(index.shape[0], index.shape[1], width)


def scatter_rows(full: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Out-of-place ``full[n, index[n, j]] = values[n, j]``: (N, L, D), (N, J), (N, J, D) -> (N, L, D)."""
    return full.scatter(1, index.unsqueeze(-1).expand(-1, -1, full.shape[-1]), values)
