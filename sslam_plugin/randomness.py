"""Random streams that are functions of what they are for, not of a process.

A training run draws masks, mixing partners, unmixed windows and decoder
noise. Each draw is seeded from (seed, epoch, the clips of the batch), so it is
the same whichever rank, DataLoader worker or relaunch computes it, and two
batches never share a stream. Nothing has to be saved in checkpoints, and a run
on N processes draws what a run on one process with N-fold gradient
accumulation draws for the same batches.
"""

from __future__ import annotations

from typing import Iterable, Union

import numpy as np
import torch

__all__ = ["derived_seed", "batch_seed", "seeded_generator"]


def derived_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (non-negative integers), in order."""
    entropy = [int(k) for k in keys]
    if any(k < 0 for k in entropy):
        raise ValueError(f"seed keys must be non-negative integers, got {entropy}")
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63: fits torch's int64 seed


def batch_seed(seed: int, epoch: int, clip_ids: Union[torch.Tensor, Iterable[int]]) -> int:
    """The seed of one batch: (seed, epoch, its clip indices in batch order)."""
    ids = clip_ids.tolist() if isinstance(clip_ids, torch.Tensor) else list(clip_ids)
    return derived_seed(seed, epoch, len(ids), *ids)


def seeded_generator(seed: int, stream: int, device: Union[str, torch.device] = "cpu") -> torch.Generator:
    """A torch generator on ``device`` for sub-stream ``stream`` of ``seed``."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, stream))
