"""AudioSet (AS-20K and AS-2M): segment CSVs plus class_labels_indices.csv; files matched by YouTube id."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..labels import clip_id
from ..scan import AUDIO_EXTENSIONS, find_audio_files
from .records import LabelFormatError, LabelledClip, LabelledSplits, PathLike, read_text_lines
from .writer import read_descriptor_rows

__all__ = ["read_audioset_segments", "audioset", "AUDIOSET_CLASS_LABELS"]

logger = logging.getLogger(__name__)


YTID_LENGTH = 11
# AudioSet's 527 classes (class_labels_indices.csv of the 2017 release, which every segment CSV
# uses), shipped with the package so that --class-labels can be left out; source: manifests/README.md
AUDIOSET_CLASS_LABELS = Path(__file__).resolve().parents[1] / "label_sets" / "audioset_class_labels_indices.csv"


def read_audioset_segments(path: PathLike) -> List[Tuple[str, Tuple[str, ...]]]:
    """Parse an AudioSet segment CSV into ``(ytid, labels)`` in file order.

    Lines starting with ``#`` (the creation date, counts and column names) and
    blank lines are skipped; a row is ``YTID, start, end, "label1,label2"``
    (spaces after the commas, the label list quoted).
    """
    path = Path(path)
    segments = []
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line], skipinitialspace=True))
        if len(row) != 4:
            raise LabelFormatError(
                f"{path}:{lineno}: expected 'YTID, start_seconds, end_seconds, \"label1,label2\"' "
                f"(4 fields), got {len(row)}: {line!r}"
            )
        ytid = row[0].strip()
        try:
            float(row[1]), float(row[2])
        except ValueError:
            raise LabelFormatError(f"{path}:{lineno}: start/end seconds {row[1]!r}, {row[2]!r} are not numbers") from None
        labels = tuple(dict.fromkeys(label.strip() for label in row[3].split(",") if label.strip()))
        if not ytid or not labels:
            raise LabelFormatError(f"{path}:{lineno}: empty YouTube id or label list: {line!r}")
        segments.append((ytid, labels))
    return segments


def _ytid_of(stem: str, listed: Set[str], pattern: Optional[re.Pattern]) -> Optional[str]:
    """The listed YouTube id a downloaded file's name (without extension) refers to.

    Common layouts: ``ID``, ``YID`` (the PANNs download), ``ID_30000_40000``,
    ``ID_30.000``, ``YID_30.000_40.000``; or a custom regex with a group ``ytid``.
    """
    if pattern is not None:
        match = pattern.search(stem)
        if not match:
            return None
        ytid = match.group("ytid") if "ytid" in pattern.groupindex else match.group(1)
        return ytid if ytid in listed else None
    candidates = [stem, stem[:YTID_LENGTH]]
    if stem.startswith("Y"):
        candidates += [stem[1:], stem[1 : 1 + YTID_LENGTH]]
    for candidate in candidates:
        if candidate in listed:
            return candidate
    return None


def audioset(
    audio_dir: PathLike,
    class_labels: Optional[PathLike] = None,
    balanced: Optional[PathLike] = None,
    unbalanced: Optional[PathLike] = None,
    eval_segments: Optional[PathLike] = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    id_pattern: Optional[str] = None,
) -> Dict[str, LabelledSplits]:
    """AudioSet sets from the segment CSVs, matched to the files under ``audio_dir``.

    ``as20k``: ``train`` from ``balanced``; ``as2m``: ``train`` = balanced plus
    unbalanced, with sampling weights (when ``unbalanced`` is given); both
    with ``eval`` from ``eval_segments`` (only ``eval_only`` when no training
    CSV is given). Labels are the class ``mid`` values, described by
    ``class_labels`` (``class_labels_indices.csv``; default: the shipped copy,
    :data:`AUDIOSET_CLASS_LABELS`).
    """
    if class_labels is None:
        class_labels = AUDIOSET_CLASS_LABELS
    descriptors = read_descriptor_rows(class_labels)
    known = {d.id for d in descriptors}
    csvs = {"balanced": balanced, "unbalanced": unbalanced, "eval": eval_segments}
    if not any(csvs.values()):
        raise LabelFormatError("give at least one AudioSet segment CSV (balanced, unbalanced or eval)")
    segments: Dict[str, List[Tuple[str, Tuple[str, ...]]]] = {}
    for name, csv_path in csvs.items():
        if csv_path is None:
            continue
        segments[name] = read_audioset_segments(csv_path)
        for ytid, labels in segments[name]:
            unknown = [label for label in labels if label not in known]
            if unknown:
                raise LabelFormatError(
                    f"{csv_path}: segment {ytid} has labels {unknown} that {class_labels} does not list; "
                    "are both files from the same AudioSet release?"
                )

    listed = {ytid for rows in segments.values() for ytid, _ in rows}
    pattern = re.compile(id_pattern) if id_pattern else None
    file_of: Dict[str, str] = {}
    duplicates = 0
    for rel in find_audio_files(audio_dir, extensions):
        ytid = _ytid_of(clip_id(rel), listed, pattern)
        if ytid is None:
            continue
        if ytid in file_of:
            duplicates += 1
        else:
            file_of[ytid] = rel
    if duplicates:
        logger.warning("%d YouTube ids have more than one file under %s; the first in path order is used", duplicates, audio_dir)
    if listed and not file_of:
        raise LabelFormatError(
            f"{audio_dir}: none of the {len(listed)} listed YouTube ids matches a file name; expected names "
            "like ID.wav, YID.wav or ID_start_end.wav (or give a regex with a group named 'ytid')"
        )

    def clips_of(rows: Sequence[Tuple[str, Tuple[str, ...]]]) -> Tuple[List[LabelledClip], List[str]]:
        clips, missing, seen = [], [], set()
        for ytid, labels in rows:
            if ytid in seen:
                continue
            seen.add(ytid)
            if ytid in file_of:
                clips.append(LabelledClip(file_of[ytid], clip_id(file_of[ytid]), labels))
            else:
                missing.append(ytid)
        return sorted(clips, key=lambda c: c.path), missing

    train_rows: Dict[str, List[Tuple[str, Tuple[str, ...]]]] = {}
    if "balanced" in segments:
        train_rows["as20k"] = segments["balanced"]
    if "unbalanced" in segments:
        merged = dict(segments.get("balanced", []))
        for ytid, labels in segments["unbalanced"]:
            merged.setdefault(ytid, labels)
        train_rows["as2m"] = list(merged.items())
        if "balanced" not in segments:
            logger.warning("no balanced segment CSV given: as2m/train holds the unbalanced segments only")
    eval_clips, eval_missing = clips_of(segments["eval"]) if "eval" in segments else ([], [])
    sets = {}
    for name, rows in (train_rows or {"eval_only": []}).items():
        splits: Dict[str, List[LabelledClip]] = {}
        missing: Dict[str, List[str]] = {}
        if rows:
            splits["train"], missing["train"] = clips_of(rows)
        if "eval" in segments:
            splits["eval"], missing["eval"] = eval_clips, eval_missing
        sets[name] = LabelledSplits(
            name=f"AudioSet {name}",
            root=Path(audio_dir),
            descriptors=descriptors,
            splits=splits,
            missing=missing,
            weight_splits=("train",) if name == "as2m" else (),
        )
    return sets
