"""Frame targets from events, and the time grid of a detection model.

Time resolution: the encoder sees 16 x 16 patches of a 10 ms fbank, so one patch row is
16 frames = 160 ms (:class:`FrameGrid` ``row_seconds``). The detection head predicts per patch row
and resamples to ``hop`` seconds (160 ms divided by an integer: 160, 80, 40, 20 ms...).
Output frame ``i`` covers ``[i * hop, (i + 1) * hop)`` seconds of its window.

A frame's target for a class is the fraction of the frame that the class's events cover
(their union), in [0, 1]: an onset 10 ms into a 40 ms frame gives 0.75. Soft targets say
exactly where an event starts inside a frame; a frame entirely inside an event gets 1.

Dimensions: F = output frames, C = classes. No fairseq needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from .strong_labels import Event

__all__ = ["FrameGrid", "frame_targets", "window_events", "clip_target"]


@dataclass(frozen=True)
class FrameGrid:
    """The frames of one model window.

    Args:
        window_frames: fbank frames per window (the task's ``target_length``).
        hop: output frame hop, seconds; 160 ms (one patch row) must be a whole number of hops.
        patch_size: fbank frames per patch row (16).
        frame_shift: fbank hop, seconds (0.01).
    """

    window_frames: int
    hop: float = 0.04
    patch_size: int = 16
    frame_shift: float = 0.01

    def __post_init__(self) -> None:
        if self.window_frames <= 0 or self.window_frames % self.patch_size:
            raise ValueError(
                f"window of {self.window_frames} fbank frames is not a positive multiple of the patch size {self.patch_size}"
            )
        ratio = self.row_seconds / self.hop if self.hop > 0 else 0.0
        if self.hop <= 0 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(
                f"hop {self.hop} s must divide one patch row ({self.row_seconds:g} s) into a whole number of frames "
                "(e.g. 0.16, 0.08, 0.04, 0.02)"
            )

    @property
    def row_seconds(self) -> float:
        """Seconds per patch row: 16 frames x 10 ms = 0.16."""
        return self.patch_size * self.frame_shift

    @property
    def rows(self) -> int:
        return self.window_frames // self.patch_size

    @property
    def frames_per_row(self) -> int:
        return int(round(self.row_seconds / self.hop))

    @property
    def num_frames(self) -> int:
        """Output frames per window."""
        return self.rows * self.frames_per_row

    @property
    def window_seconds(self) -> float:
        return self.window_frames * self.frame_shift

    def frame_times(self, num_frames: int = 0) -> np.ndarray:
        """(F + 1,) frame boundaries in seconds: onsets of every frame, then the last offset."""
        n = num_frames or self.num_frames
        return np.arange(n + 1, dtype=np.float64) * self.hop


def frame_targets(
    events: Sequence[Tuple[int, float, float]], num_frames: int, hop: float, num_classes: int
) -> torch.Tensor:
    """(F, C) float32 coverage targets.

    Args:
        events: ``(class index, onset, offset)`` in seconds from the start of the frames;
            parts outside ``[0, num_frames * hop)`` are ignored.

    Returns:
        target[i, c]: the fraction of ``[i * hop, (i + 1) * hop)`` covered by class c's events.
    """
    target = np.zeros((num_frames, num_classes), dtype=np.float64)
    by_class: Dict[int, List[Tuple[float, float]]] = {}
    end = num_frames * hop
    for c, onset, offset in events:
        if not 0 <= c < num_classes:
            raise ValueError(f"class index {c} is outside 0..{num_classes - 1}")
        onset, offset = max(float(onset), 0.0), min(float(offset), end)
        if offset > onset:
            by_class.setdefault(c, []).append((onset, offset))
    starts = np.arange(num_frames, dtype=np.float64) * hop  # (F,)
    for c, spans in by_class.items():
        for onset, offset in _union(spans):
            covered = np.minimum(starts + hop, offset) - np.maximum(starts, onset)  # (F,) seconds
            target[:, c] += np.clip(covered, 0.0, None)
    return torch.from_numpy(np.clip(target / hop, 0.0, 1.0).astype(np.float32))


def _union(spans: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    out: List[Tuple[float, float]] = []
    for onset, offset in sorted(spans):
        if out and onset <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], offset))
        else:
            out.append((onset, offset))
    return out


def window_events(
    events: Sequence[Event], index: Mapping[str, int], start: float, seconds: float
) -> List[Tuple[int, float, float]]:
    """The events of a clip seen through the window ``[start, start + seconds)``.

    Returns ``(class index, onset, offset)`` relative to the window's start, cut to the window;
    events entirely outside it are left out. An event across the window's edge appears in both
    windows, each with its part.
    """
    out = []
    for e in events:
        onset, offset = max(e.onset - start, 0.0), min(e.offset - start, seconds)
        if offset > onset:
            out.append((index[e.label], onset, offset))
    return out


def clip_target(labels: Sequence[str], index: Mapping[str, int]) -> torch.Tensor:
    """(C,) multi-hot clip-level target."""
    target = torch.zeros(len(index))
    for label in labels:
        target[index[label]] = 1.0
    return target
