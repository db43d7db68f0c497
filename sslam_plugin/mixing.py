"""Partial audio mixtures for SSLAM stage 2.

Each clip A_i is paired with a partner P_i = A_{partner[i]}; a few windows of
whole patch rows stay unmixed (A alone), and everywhere else the mixture is
``op(A, P)`` on the normalised log-mel values (element-wise ``max`` by default,
or ``mean``, the average of the two clips' mel powers).

Windows are given as start frames, shape (W, num_windows) with W = 1 (one set
for the whole batch) or W = B (one set per clip); every start is a multiple of
the patch size and every window is ``window_frames`` long.

Dimensions: B = clips, T = frames, M = mel bins, R = patch rows (T / patch).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .features import AUDIOSET_MEAN, AUDIOSET_STD

__all__ = [
    "MixingConfig",
    "partner_indices",
    "sample_unmixed_windows",
    "unmixed_frames",
    "unmixed_rows",
    "partial_mix",
    "fit_window_rows",
]

logger = logging.getLogger(__name__)

OPERATIONS = ("max", "mean")
PARTNERS = ("previous", "derangement")
WINDOW_MODES = ("batch", "clip")
WINDOW_SAMPLERS = ("public", "uniform")


@dataclass
class MixingConfig:
    enabled: bool = field(default=False, metadata={"help": "SSLAM stage 2: add partially mixed clips and the SRL"})
    num_unmixed_windows: int = field(default=2, metadata={"help": "windows per clip left unmixed"})
    unmixed_window_frames: int = field(
        default=240, metadata={"help": "length of each unmixed window in frames (a multiple of the patch size)"}
    )
    operation: str = field(default="max", metadata={"help": "max (element-wise) or mean (average of mel power)"})
    partner: str = field(default="previous", metadata={"help": "previous clip in the batch, or a random derangement"})
    windows_per: str = field(default="batch", metadata={"help": "draw windows once per batch, or per clip"})
    window_sampler: str = field(
        default="public",
        metadata={
            "help": "public: the public SSLAM code's rule (two windows: the first in the first half, the "
            "second after it); uniform: uniform over all non-overlapping placements"
        },
    )
    unmixed_student: bool = field(
        default=True,
        metadata={
            "help": "the student also learns from the unmixed clips (patch and utterance terms); false: "
            "from the mixtures only, at half the student cost (the paper's MB-PMA variant)"
        },
    )
    source_retention: bool = field(
        default=True,
        metadata={
            "help": "compute the Source Retention Loss (false: no partner teacher pass and no "
            "source_retention term; the paper's MB-UA-PMA and MB-PMA variants)"
        },
    )
    seed: int = field(default=1, metadata={"help": "seed of the model's window/partner generator"})
    # no normalisation constants here: the "mean" operation takes the task's front end (task.norm_mean/norm_std)

    def validate(self, patch_size: int) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"mixing.operation must be one of {OPERATIONS}, got {self.operation!r}")
        if self.partner not in PARTNERS:
            raise ValueError(f"mixing.partner must be one of {PARTNERS}, got {self.partner!r}")
        if self.windows_per not in WINDOW_MODES:
            raise ValueError(f"mixing.windows_per must be one of {WINDOW_MODES}, got {self.windows_per!r}")
        if self.window_sampler not in WINDOW_SAMPLERS:
            raise ValueError(f"mixing.window_sampler must be one of {WINDOW_SAMPLERS}, got {self.window_sampler!r}")
        if self.num_unmixed_windows < 0:
            raise ValueError(f"mixing.num_unmixed_windows must be >= 0, got {self.num_unmixed_windows}")
        if self.unmixed_window_frames <= 0 or self.unmixed_window_frames % patch_size:
            raise ValueError(
                f"mixing.unmixed_window_frames must be a positive multiple of the patch size ({patch_size}), "
                f"got {self.unmixed_window_frames}"
            )


def partner_indices(batch: int, mode: str = "previous", generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Index of each clip's partner, never the clip itself (needs batch >= 2).

    ``previous``: clip i is paired with clip i-1 (clip 0 with the last), as the
    paper's roll by one. ``derangement``: a random cyclic permutation
    (Sattolo's algorithm), so no clip is its own partner.

    Returns:
        (batch,) long tensor.
    """
    if batch < 2:
        raise ValueError(f"a partner needs at least 2 clips in the batch, got {batch}")
    if mode == "previous":
        return (torch.arange(batch) - 1) % batch
    if mode != "derangement":
        raise ValueError(f"unknown partner mode {mode!r}")
    perm = torch.arange(batch)
    for i in range(batch - 1, 0, -1):
        j = int(torch.randint(0, i, (1,), generator=generator))
        perm[[i, j]] = perm[[j, i]]
    return perm


def fit_window_rows(rows: int, num_windows: int, window_rows: int) -> int:
    """Rows per window, shrunk when the windows would leave no patch row mixed."""
    if num_windows == 0 or num_windows * window_rows < rows:
        return window_rows
    return max((rows - 1) // num_windows, 0)


def sample_unmixed_windows(
    rows: int,
    num_windows: int,
    window_rows: int,
    count: int = 1,
    generator: Optional[torch.Generator] = None,
    sampler: str = "uniform",
) -> torch.Tensor:
    """Non-overlapping windows of whole patch rows.

    ``"uniform"``: uniform over all placements. ``"public"``: the public SSLAM
    code's rule, which at its shape (64 rows, two windows of 15) draws the first
    start uniformly from rows 0..31 (frames 0, 16, ..., 496) and the second
    uniformly from start1 + 15 .. 48 (frames below 783). Its generalisation to
    R rows and windows of w rows: the first start uniform on
    0 .. min(R // 2, R - 2w) - 1, the second on start1 + w .. R - w - 1
    (the public bound leaves the last placement out; kept). Other window
    counts, or shapes where that rule has no room, use ``"uniform"``.

    Args:
        rows: patch rows in a clip.
        count: independent draws (1 per batch, or one per clip).

    Returns:
        (count, num_windows) start rows, sorted, each window inside the clip.
    """
    free = rows - num_windows * window_rows
    if free < 0:
        raise ValueError(f"{num_windows} windows of {window_rows} rows do not fit in {rows} rows")
    if sampler == "public" and num_windows == 2 and min(rows // 2, rows - 2 * window_rows) >= 1:
        return _public_windows(rows, window_rows, count, generator)
    if sampler not in WINDOW_SAMPLERS:
        raise ValueError(f"unknown window sampler {sampler!r}")
    # Choose num_windows distinct slots among free + num_windows; slot j of the
    # sorted choice becomes a window preceded by (slot - j) free rows.
    scores = torch.rand(count, free + num_windows, generator=generator)
    slots = scores.argsort(dim=1)[:, :num_windows].sort(dim=1).values  # (count, W)
    offsets = torch.arange(num_windows) * (window_rows - 1)
    return slots + offsets


def _public_windows(rows: int, window_rows: int, count: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """(count, 2) start rows by the public rule (see :func:`sample_unmixed_windows`)."""
    first_choices = min(rows // 2, rows - 2 * window_rows)
    first = torch.randint(0, first_choices, (count,), generator=generator)
    last_start = rows - window_rows - 1  # inclusive
    second_choices = last_start - (first + window_rows) + 1  # >= 1 by the bound on first
    second = first + window_rows + (torch.rand(count, generator=generator) * second_choices).long()
    return torch.stack([first, second], dim=1)


def unmixed_rows(windows: torch.Tensor, window_frames: int, patch_size: int, rows: int) -> torch.Tensor:
    """Patch rows inside the unmixed windows.

    Args:
        windows: (W, num_windows) start frames.

    Returns:
        (W, rows) bool, True = unmixed row.
    """
    if windows.dim() != 2:
        raise ValueError(f"windows must be (1 or clips, num_windows) start frames, got {tuple(windows.shape)}")
    if bool((windows % patch_size != 0).any()):
        raise ValueError(f"window starts {windows.tolist()} must be multiples of the patch size {patch_size}")
    start = windows // patch_size  # (W, num_windows) rows
    length = window_frames // patch_size
    row = torch.arange(rows, device=windows.device)
    inside = (row[None, None, :] >= start[..., None]) & (row[None, None, :] < start[..., None] + length)
    if bool((start + length > rows).any()):
        raise ValueError(f"window starts {windows.tolist()} + {window_frames} frames run past the clip")
    return inside.any(dim=1)


def unmixed_frames(windows: torch.Tensor, window_frames: int, frames: int) -> torch.Tensor:
    """(W, frames) bool, True = frame inside an unmixed window."""
    t = torch.arange(frames, device=windows.device)
    inside = (t[None, None, :] >= windows[..., None]) & (t[None, None, :] < windows[..., None] + window_frames)
    return inside.any(dim=1)


def partial_mix(
    clips: torch.Tensor,
    partners: torch.Tensor,
    unmixed: torch.Tensor,
    operation: str = "max",
    norm_mean: float = AUDIOSET_MEAN,
    norm_std: float = AUDIOSET_STD,
) -> torch.Tensor:
    """Mix ``clips`` with ``partners`` outside the unmixed frames.

    Args:
        clips, partners: (B, 1, T, M) normalised log-mel features.
        unmixed: (1 or B, T) bool, True = keep the clip alone.
        operation: ``max`` of the normalised values, or ``mean``: the log of
            the average mel power, computed in the un-normalised log domain.
        norm_mean, norm_std: the front end's normalisation (``FbankConfig``), which
            ``mean`` undoes and redoes.

    Returns:
        (B, 1, T, M) mixtures.
    """
    if clips.shape != partners.shape:
        raise ValueError(f"clips {tuple(clips.shape)} and partners {tuple(partners.shape)} differ")
    if operation == "max":
        mixed = torch.maximum(clips, partners)
    elif operation == "mean":
        scale = 2.0 * norm_std  # normalised x = (log power - mean) / (2 std)
        log_a, log_p = clips * scale + norm_mean, partners * scale + norm_mean
        mixed = (torch.logaddexp(log_a, log_p) - math.log(2.0) - norm_mean) / scale
    else:
        raise ValueError(f"unknown mixing operation {operation!r}")
    keep = unmixed[:, None, :, None].to(clips.device)  # (W, T) -> (W, 1, T, 1)
    return torch.where(keep, clips, mixed)
