"""ESC-50: meta/esc50.csv; one output folder per held-out fold."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Dict, List, Optional

from ..labels import Label, clip_id
from .records import LabelFormatError, LabelledClip, LabelledSplits, PathLike, check_label, read_text_lines

__all__ = ["esc50"]

logger = logging.getLogger(__name__)


def esc50(root: PathLike, audio_dir: Optional[PathLike] = None) -> Dict[str, LabelledSplits]:
    """One set per held-out fold, keyed ``fold1`` ... ``fold5``: ``train`` = the other folds, ``eval`` = that fold.

    Reads ``root/meta/esc50.csv`` (``filename,fold,target,category,...``); the
    audio is ``root/audio`` unless ``audio_dir`` names, e.g., a resampled copy.
    Labels are the category names, indexed in ``target`` order.
    """
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    audio_root = Path(audio_dir) if audio_dir is not None else root / "audio"
    reader = csv.DictReader(read_text_lines(meta))
    required = {"filename", "fold", "target", "category"}
    if reader.fieldnames is None or not required <= set(reader.fieldnames):
        raise LabelFormatError(f"{meta}:1: expected columns {sorted(required)}, got {reader.fieldnames}")
    clips_by_fold: Dict[int, List[LabelledClip]] = {}
    category_of: Dict[int, str] = {}
    for lineno, row in enumerate(reader, start=2):
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except (TypeError, ValueError):
            raise LabelFormatError(f"{meta}:{lineno}: fold {row['fold']!r} or target {row['target']!r} is not an integer") from None
        category = (row["category"] or "").strip()
        check_label(category, f"{meta}:{lineno}: category")
        if category_of.setdefault(target, category) != category:
            raise LabelFormatError(
                f"{meta}:{lineno}: target {target} is {category!r} here but {category_of[target]!r} earlier"
            )
        filename = (row["filename"] or "").strip()
        clips_by_fold.setdefault(fold, []).append(LabelledClip(filename, clip_id(filename), (category,)))
    if len(set(category_of.values())) != len(category_of):
        raise LabelFormatError(f"{meta}: one category has several targets")
    if len(clips_by_fold) < 2:
        raise LabelFormatError(f"{meta}: found folds {sorted(clips_by_fold)}; cross-validation needs at least two")
    # index = target for the full dataset; renumbered without gaps for a subset such as ESC-10
    descriptors = [Label(i, c, c.replace("_", " ")) for i, (_, c) in enumerate(sorted(category_of.items()))]
    sets = {}
    for held_out in sorted(clips_by_fold):
        train = sorted((c for f, clips in clips_by_fold.items() if f != held_out for c in clips), key=lambda c: c.path)
        sets[f"fold{held_out}"] = LabelledSplits(
            name=f"ESC-50 fold {held_out}",
            root=audio_root,
            descriptors=descriptors,
            splits={"train": train, "eval": sorted(clips_by_fold[held_out], key=lambda c: c.path)},
        )
    return sets
