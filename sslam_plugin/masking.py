"""Inverse block masks on the (time x frequency) patch grid.

Mask polarity, everywhere in this package: ``mask`` is (copies, patches) bool,
True = masked (removed from the student, predicted by the decoder),
False = kept (seen by the student). Patches are ordered time-major: index
``row * freq_patches + col``.

Inverse block masking keeps a few random 5x5 blocks of patches and masks the
rest; every copy then has exactly the same number of kept patches so copies
can be batched without padding.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["mask_rng", "inverse_block_mask"]


def mask_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, clip index).

    Masks drawn from it are the same in any worker, on any rank, after resuming.
    """
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def inverse_block_mask(
    grid: Tuple[int, int],
    copies: int,
    mask_ratio: float = 0.8,
    mask_ratio_adjust: float = 0.07,
    block_size: int = 5,
    rng: Optional[np.random.Generator] = None,
) -> np.ndarray:
    """Draw ``copies`` inverse block masks on a (rows, cols) patch grid.

    ``int(L * (1 - mask_ratio + adjust) / block_size**2)`` block centres are drawn
    uniformly with replacement; the block around each centre (clipped at the
    grid's edges) is kept; then random patches are added to or removed from
    the kept set until exactly ``int(L * (1 - mask_ratio))`` are kept.

    Args:
        grid: (time patches, frequency patches).
        copies: number of independent masks.

    Returns:
        (copies, rows * cols) bool array, True = masked.
    """
    rows, cols = grid
    if rows <= 0 or cols <= 0:
        raise ValueError(f"grid must be positive, got {grid}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    rng = rng if rng is not None else np.random.default_rng()
    num_patches = rows * cols
    keep_ratio = 1.0 - mask_ratio
    num_keep = int(num_patches * keep_ratio)
    num_centres = int(num_patches * (keep_ratio + mask_ratio_adjust) / block_size**2)
    before = block_size // 2  # the block spans [centre - before, centre - before + block_size)

    masks = np.ones((copies, num_patches), dtype=bool)
    for c in range(copies):
        keep = np.zeros((rows, cols), dtype=bool)
        for centre in rng.integers(0, num_patches, size=num_centres):
            r, q = divmod(int(centre), cols)
            r0, q0 = max(r - before, 0), max(q - before, 0)
            keep[r0 : r - before + block_size, q0 : q - before + block_size] = True
        keep = keep.reshape(-1)
        kept = int(keep.sum())
        if kept > num_keep:
            drop = rng.choice(np.flatnonzero(keep), size=kept - num_keep, replace=False)
            keep[drop] = False
        elif kept < num_keep:
            add = rng.choice(np.flatnonzero(~keep), size=num_keep - kept, replace=False)
            keep[add] = True
        masks[c] = ~keep
    return masks
