"""From frame posteriors to events: median filtering, per-class thresholds, event lists, TSV / JSON.

Steps (:func:`decode`), per class:

1. median filter over time: a window of ``median_window`` seconds is ``k = round(window / hop)``
   frames, raised to the next odd number (k = 1: no filtering); the edges repeat the first and
   last frame;
2. a frame is active when its filtered posterior is ``>= threshold`` (one per class, or one for all);
3. each run of active frames ``[i, j)`` is an event from ``i * hop`` to ``j * hop`` seconds,
   the offset cut to the clip's duration.

Dimensions: F = frames, C = classes. No fairseq needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from .strong_labels import STRONG_HEADER, Event

__all__ = ["median_window_frames", "median_filter", "class_values", "binarize", "frames_to_events", "decode", "write_events_tsv", "events_to_json"]

PerClass = Union[float, Sequence[float], Mapping[str, float]]


def median_window_frames(seconds: float, hop: float) -> int:
    """Frames of a median window of ``seconds``: ``round(seconds / hop)``, raised to the next odd number (>= 1)."""
    if seconds < 0:
        raise ValueError(f"median window must be >= 0 seconds, got {seconds}")
    k = max(1, int(round(seconds / hop)))
    return k if k % 2 else k + 1


def median_filter(posteriors: np.ndarray, window: Union[int, Sequence[int]]) -> np.ndarray:
    """(F, C) posteriors filtered along time with an odd window per class (edges repeated).

    Args:
        window: frames, one for all classes or one per class; 1 leaves a class as it is.
    """
    x = np.asarray(posteriors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected (frames, classes) posteriors, got shape {x.shape}")
    windows = [int(window)] * x.shape[1] if np.isscalar(window) else [int(w) for w in window]
    if len(windows) != x.shape[1]:
        raise ValueError(f"{len(windows)} median windows for {x.shape[1]} classes")
    out = x.copy()
    for c, k in enumerate(windows):
        if k < 1 or k % 2 == 0:
            raise ValueError(f"median window must be an odd number of frames, got {k}")
        if k == 1 or x.shape[0] == 0:
            continue
        half = k // 2
        padded = np.pad(x[:, c], half, mode="edge")  # (F + k - 1,)
        out[:, c] = np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)  # (F, k) -> (F,)
    return out


def class_values(values: PerClass, labels: Sequence[str], what: str) -> np.ndarray:
    """(C,) one value per class from a scalar, a sequence in class order or {label: value}."""
    if isinstance(values, Mapping):
        unknown = sorted(set(values) - set(labels))
        if unknown:
            raise ValueError(f"{what} for unknown labels {unknown}; the model's labels are {list(labels)}")
        missing = [lab for lab in labels if lab not in values]
        if missing and "default" not in values:
            raise ValueError(f"{what} has no value for {missing} (give one per label, or a 'default')")
        return np.array([float(values.get(lab, values.get("default", 0.0))) for lab in labels])
    if np.isscalar(values):
        return np.full(len(labels), float(values))
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (len(labels),):
        raise ValueError(f"{what}: {arr.shape[0] if arr.ndim else 1} values for {len(labels)} classes")
    return arr


def binarize(posteriors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(F, C) bool: posterior >= the class's threshold."""
    return np.asarray(posteriors) >= np.asarray(thresholds)[None, :]


def frames_to_events(
    active: np.ndarray, labels: Sequence[str], hop: float, clip: str = "", duration: Optional[float] = None
) -> List[Event]:
    """Runs of active frames -> events ``[i * hop, j * hop)`` (offset cut to ``duration``), sorted by onset."""
    events = []
    for c, label in enumerate(labels):
        padded = np.concatenate([[False], np.asarray(active[:, c], dtype=bool), [False]])
        changes = np.flatnonzero(padded[1:] != padded[:-1])  # starts and ends alternate
        for start, end in zip(changes[::2], changes[1::2]):
            onset, offset = start * hop, end * hop
            if duration is not None:
                offset = min(offset, duration)
            if offset > onset:
                events.append(Event(clip, round(float(onset), 6), round(float(offset), 6), label))
    return sorted(events, key=lambda e: (e.onset, e.offset, e.label))


def decode(
    posteriors: np.ndarray,
    labels: Sequence[str],
    hop: float,
    thresholds: PerClass = 0.5,
    median_window: PerClass = 0.0,
    clip: str = "",
    duration: Optional[float] = None,
) -> List[Event]:
    """(F, C) frame posteriors of one clip -> its events (see the module docstring).

    Args:
        thresholds: one for all classes, one per class, or {label: threshold} (``default`` for the rest).
        median_window: seconds, the same forms.
    """
    posteriors = np.asarray(posteriors, dtype=np.float64)
    seconds = class_values(median_window, labels, "median window")
    filtered = median_filter(posteriors, [median_window_frames(s, hop) for s in seconds])
    active = binarize(filtered, class_values(thresholds, labels, "thresholds"))
    return frames_to_events(active, labels, hop, clip, duration)


def write_events_tsv(path: Union[str, Path], events: Mapping[str, Sequence[Event]], decimals: int = 3) -> None:
    """Detected events as the DCASE TSV (``filename onset offset event_label``), clips in order.

    Clips without events are left out, as DCASE systems' outputs do.
    """
    lines = [STRONG_HEADER]
    for clip in sorted(events):
        for e in sorted(events[clip], key=lambda x: (x.onset, x.offset, x.label)):
            lines.append(f"{clip}\t{e.onset:.{decimals}f}\t{e.offset:.{decimals}f}\t{e.label}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def events_to_json(events: Mapping[str, Sequence[Event]], decimals: int = 3) -> str:
    """{clip: [{onset, offset, event_label}, ...]} as JSON text."""
    data: Dict[str, list] = {
        clip: [
            {"onset": round(e.onset, decimals), "offset": round(e.offset, decimals), "event_label": e.label}
            for e in sorted(clip_events, key=lambda x: (x.onset, x.offset, x.label))
        ]
        for clip, clip_events in sorted(events.items())
    }
    return json.dumps(data, indent=2)
