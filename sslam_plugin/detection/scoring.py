"""Scoring detections with the field's own libraries, with the settings stated.

* Event-based F1 (``sed_eval.sound_event.EventBasedMetrics``): a detected event matches a
  reference event of the same label when its onset is within ``collar`` seconds of the reference
  onset and its offset within ``max(collar, offset_collar_ratio x reference length)`` of the
  reference offset (DCASE's 200 ms / 20 %). Reported: ``event_f1_macro`` (sed_eval's class-wise
  average; a class without detections has no precision and sed_eval leaves it out of the average)
  and ``event_f1_micro`` (over all events).
* Segment-based F1 (``sed_eval.sound_event.SegmentBasedMetrics``): activity compared in
  ``segment_length``-second segments (1 s); ``segment_f1_macro`` and ``segment_f1_micro``.
* PSDS (``sed_scores_eval.intersection_based.psds``), threshold-free, from the frame posteriors
  (after the median filter). Scenario 1 (DCASE 2021-2023): DTC 0.7, GTC 0.7, no cross-trigger
  penalty (alpha_ct 0), alpha_st 1, eFPR up to 100 per hour; scenario 2: DTC 0.1, GTC 0.1,
  CTTC 0.3, alpha_ct 0.5, alpha_st 1, eFPR up to 100 per hour.

Reference events of one label that overlap or touch are merged first (both libraries expect
separate events). No fairseq needed.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .strong_labels import Event, merge_overlaps

__all__ = ["PSDSScenario", "ScoringSettings", "event_metrics", "psds_scores", "score_detections"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PSDSScenario:
    dtc_threshold: float
    gtc_threshold: float
    cttc_threshold: Optional[float] = None
    alpha_ct: float = 0.0
    alpha_st: float = 1.0
    max_efpr: float = 100.0  # effective false positives per hour


PSDS1 = PSDSScenario(dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0)
PSDS2 = PSDSScenario(dtc_threshold=0.1, gtc_threshold=0.1, cttc_threshold=0.3, alpha_ct=0.5, alpha_st=1.0)


@dataclass(frozen=True)
class ScoringSettings:
    collar: float = 0.2  # seconds, onsets (and offsets at least)
    offset_collar_ratio: float = 0.2  # offsets: max(collar, ratio x reference length)
    evaluate_offset: bool = True
    segment_length: float = 1.0  # seconds
    psds: Dict[str, PSDSScenario] = field(default_factory=lambda: {"psds1": PSDS1, "psds2": PSDS2})

    def describe(self) -> Dict[str, object]:
        """The settings as plain data, reported beside the numbers."""
        return {
            "event_collar_s": self.collar,
            "event_offset_collar": f"max({self.collar} s, {self.offset_collar_ratio} x reference length)"
            if self.evaluate_offset else "offsets not evaluated",
            "segment_length_s": self.segment_length,
            **{name: dataclasses.asdict(s) for name, s in self.psds.items()},
        }


def _as_dicts(events: Sequence[Event], clip: str) -> List[Dict[str, object]]:
    return [{"filename": clip, "onset": e.onset, "offset": e.offset, "event_label": e.label} for e in events]


def event_metrics(
    reference: Mapping[str, Sequence[Event]],
    detected: Mapping[str, Sequence[Event]],
    labels: Sequence[str],
    settings: ScoringSettings = ScoringSettings(),
) -> Dict[str, object]:
    """Event- and segment-based F1 with sed_eval over the clips of ``reference``.

    Args:
        reference: {clip: events} for every scored clip (an empty list: no events).
        detected: {clip: events}; clips missing here detected nothing.

    Returns:
        event_f1_macro, event_f1_micro, segment_f1_macro, segment_f1_micro, and
        ``per_class`` {label: event F1} (NaN where sed_eval has no value).
    """
    import sed_eval  # the field's library; imported here so the package imports without it

    event_based = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(labels),
        t_collar=settings.collar,
        percentage_of_length=settings.offset_collar_ratio,
        evaluate_onset=True,
        evaluate_offset=settings.evaluate_offset,
    )
    segment_based = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=list(labels), time_resolution=settings.segment_length
    )
    for clip in sorted(reference):
        ref = _as_dicts(merge_overlaps(reference[clip]), clip)
        est = _as_dicts(merge_overlaps(detected.get(clip, [])), clip)
        event_based.evaluate(reference_event_list=ref, estimated_event_list=est)
        segment_based.evaluate(reference_event_list=ref, estimated_event_list=est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sed_eval's NaN means for classes without detections
        ev, seg = event_based.results(), segment_based.results()
    return {
        "event_f1_macro": float(ev["class_wise_average"]["f_measure"]["f_measure"]),
        "event_f1_micro": float(ev["overall"]["f_measure"]["f_measure"]),
        "segment_f1_macro": float(seg["class_wise_average"]["f_measure"]["f_measure"]),
        "segment_f1_micro": float(seg["overall"]["f_measure"]["f_measure"]),
        "per_class": {label: float(ev["class_wise"][label]["f_measure"]["f_measure"]) for label in labels},
    }


def _writable_frame(frame):
    """``frame`` as a DataFrame whose ``to_numpy()`` is writable.

    sed_scores_eval 0.0.4 hands ``DataFrame.to_numpy()`` to Cython memoryviews that must be
    writable; pandas 3 (copy-on-write) returns read-only arrays there ("buffer source array is
    read-only"). The subclass returns a copy, and keeps the subclass through column selection.
    """
    import pandas as pd

    class _WritableFrame(pd.DataFrame):
        @property
        def _constructor(self):
            return _WritableFrame

        def to_numpy(self, *args, **kwargs):
            return np.array(super().to_numpy(*args, **kwargs), copy=True)

    return _WritableFrame(frame)


def psds_scores(
    posteriors: Mapping[str, np.ndarray],
    hop: float,
    reference: Mapping[str, Sequence[Event]],
    durations: Mapping[str, float],
    labels: Sequence[str],
    settings: ScoringSettings = ScoringSettings(),
) -> Dict[str, float]:
    """PSDS of each scenario with sed_scores_eval.

    Args:
        posteriors: {clip: (F, C) frame posteriors, frame i = [i * hop, (i + 1) * hop)} for every
            clip of ``reference``; frames past the clip's duration are dropped.
        durations: {clip: seconds}.
    """
    from sed_scores_eval.base_modules.scores import create_score_dataframe
    from sed_scores_eval.intersection_based import psds

    scores, truth, lengths = {}, {}, {}
    for clip in sorted(reference):
        if clip not in posteriors:
            raise ValueError(f"no posteriors for clip {clip!r}")
        duration = float(durations[clip])
        post = np.asarray(posteriors[clip], dtype=np.float64)
        frames = min(post.shape[0], int(np.ceil(duration / hop - 1e-9)))
        times = np.minimum(np.arange(frames + 1) * hop, duration)  # (F + 1,) boundaries, the last at the clip's end
        scores[clip] = _writable_frame(create_score_dataframe(post[:frames], times, list(labels)))
        truth[clip] = [(e.onset, e.offset, e.label) for e in merge_overlaps(reference[clip])]
        lengths[clip] = duration
    out = {}
    for name, s in settings.psds.items():
        value, *_ = psds(
            scores=scores,
            ground_truth=truth,
            audio_durations=lengths,
            dtc_threshold=s.dtc_threshold,
            gtc_threshold=s.gtc_threshold,
            cttc_threshold=s.cttc_threshold,
            alpha_ct=s.alpha_ct,
            alpha_st=s.alpha_st,
            max_efpr=s.max_efpr,
        )
        out[name] = float(value)
    return out


def score_detections(
    reference: Mapping[str, Sequence[Event]],
    detected: Mapping[str, Sequence[Event]],
    posteriors: Mapping[str, np.ndarray],
    hop: float,
    durations: Mapping[str, float],
    labels: Sequence[str],
    settings: ScoringSettings = ScoringSettings(),
) -> Dict[str, object]:
    """Every metric of this module, with ``settings`` described under ``"settings"``."""
    result = event_metrics(reference, detected, labels, settings)
    result.update(psds_scores(posteriors, hop, reference, durations, labels, settings))
    result["settings"] = settings.describe()
    result["clips"] = len(reference)
    return result
