"""Scoring a detection model on a split of a detection data folder (what ``sslam-evaluate`` reports).

Every strongly annotated clip of the split is read whole, its frame posteriors computed over
windows (:class:`~.detector.SoundEventDetector`), decoded with the thresholds and median window,
and scored (:mod:`.scoring`: event- and segment-based F1 with sed_eval, PSDS with sed_scores_eval).
No fairseq needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Union

from ..data.audio import load_audio
from ..data.labels import LabelSet
from .data_folder import read_detection_split
from .decoding import PerClass
from .detector import SoundEventDetector, load_detector
from .scoring import ScoringSettings, score_detections

__all__ = ["evaluate_detector", "format_report"]

logger = logging.getLogger(__name__)


def evaluate_detector(
    detector: Union[SoundEventDetector, str, Path],
    data: Union[str, Path],
    split: str,
    thresholds: PerClass = 0.5,
    median_window: PerClass = 0.0,
    overlap: float = 0.5,
    settings: ScoringSettings = ScoringSettings(),
    trust: bool = False,
) -> Dict[str, object]:
    """Metrics of ``detector`` (or a checkpoint path) on the strong clips of ``{data}/{split}.tsv``.

    Returns the metrics of :func:`.scoring.score_detections` plus the decoding settings, and
    ``detections`` / ``posteriors`` per clip (for writing or plotting).
    """
    if not isinstance(detector, SoundEventDetector):
        detector = load_detector(detector, trust=trust)
    labels = LabelSet.from_ids(detector.labels)
    split_data = read_detection_split(data, split, labels)
    manifest = split_data["manifest"]
    reference, detected, posteriors, durations = {}, {}, {}, {}
    for i, (clip, kind) in enumerate(zip(split_data["clip_ids"], split_data["kinds"])):
        if kind != "strong":
            continue
        wave, rate = load_audio(manifest.full_path(i))
        post = detector.posteriors(wave, rate, overlap)
        reference[clip] = split_data["events"][i]
        detected[clip] = detector.decode(post, clip, thresholds, median_window)
        posteriors[clip] = detector.filtered(post, median_window)
        durations[clip] = post.duration
    if not reference:
        raise ValueError(f"{data}/{split}: no strongly annotated clips to score")
    logger.info("scoring %d clips of %s/%s", len(reference), data, split)
    result = score_detections(reference, detected, posteriors, detector.grid.hop, durations, detector.labels, settings)
    result["decoding"] = {"thresholds": thresholds, "median_window_s": median_window, "hop_s": detector.grid.hop,
                          "window_overlap": overlap}
    result["detections"], result["posteriors"] = detected, posteriors
    return result


def format_report(result: Dict[str, object]) -> str:
    """The headline numbers and the settings they were computed with, as lines of text."""
    lines = [
        f"clips: {result['clips']}",
        f"event-based F1 (macro / micro): {result['event_f1_macro']:.4f} / {result['event_f1_micro']:.4f}",
        f"segment-based F1 (macro / micro): {result['segment_f1_macro']:.4f} / {result['segment_f1_micro']:.4f}",
    ]
    lines += [f"{name.upper()}: {result[name]:.4f}" for name in ("psds1", "psds2") if name in result]
    lines.append(f"settings: {result['settings']}")
    lines.append(f"decoding: {result['decoding']}")
    return "\n".join(lines)
