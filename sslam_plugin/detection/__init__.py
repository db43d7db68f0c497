"""Sound event detection: strong labels, frame targets, the frame-level head, decoding, scoring.

Plain PyTorch and numpy (no fairseq): the registered fairseq classes are in
``sslam_plugin.training.detection_*``. The scoring libraries (sed_eval, sed_scores_eval) are
imported only when a score is computed.
"""

from .decoding import decode, events_to_json, median_filter, write_events_tsv
from .head import FrameDetector
from .strong_labels import (
    Event,
    StrongLabelError,
    StrongLabels,
    check_events,
    read_dcase_strong,
    read_dcase_weak,
    read_polyphony_events,
    read_unlabelled,
    read_urbansed_folder,
    write_strong_tsv,
)
from .targets import FrameGrid, frame_targets, window_events

__all__ = [
    "Event",
    "FrameDetector",
    "FrameGrid",
    "StrongLabelError",
    "StrongLabels",
    "check_events",
    "decode",
    "events_to_json",
    "frame_targets",
    "median_filter",
    "read_dcase_strong",
    "read_dcase_weak",
    "read_polyphony_events",
    "read_unlabelled",
    "read_urbansed_folder",
    "window_events",
    "write_events_tsv",
    "write_strong_tsv",
]
