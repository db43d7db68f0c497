"""Speech Commands v2: word folders with validation_list.txt and testing_list.txt."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List

from ..labels import Label
from ..labels import path_clip_id
from .records import LabelFormatError, LabelledClip, LabelledSplits, PathLike, read_text_lines

__all__ = ["speech_commands"]

logger = logging.getLogger(__name__)


def speech_commands(root: PathLike) -> LabelledSplits:
    """Speech Commands v2: splits ``train``, ``valid`` and ``test``; the label is the word folder.

    ``validation_list.txt`` and ``testing_list.txt`` name the valid and test
    clips; every other ``.wav`` of a word folder is train. Folders starting
    with ``_`` or ``.`` (``_background_noise_``) are not words. Clip ids are
    ``word/file`` without extension (file names repeat across words).
    """
    root = Path(root)
    words = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    if not words:
        raise LabelFormatError(f"{root}: no word folders found; point at the extracted speech_commands_v0.02 folder")
    lists: Dict[str, List[str]] = {}
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        path = root / name
        entries = []
        for lineno, line in enumerate(read_text_lines(path), start=1):
            rel = line.strip().replace("\\", "/")
            if not rel:
                continue
            word = rel.split("/", 1)[0]
            if "/" not in rel or word not in words:
                raise LabelFormatError(f"{path}:{lineno}: {rel!r} is not 'word/file.wav' for a word folder of {root}")
            entries.append(rel)
        lists[split] = entries
    overlap = set(lists["valid"]) & set(lists["test"])
    if overlap:
        raise LabelFormatError(f"{root}: {len(overlap)} clips are in both lists, e.g. {sorted(overlap)[0]}")
    held_out = set(lists["valid"]) | set(lists["test"])
    train = [
        f"{word}/{name}"
        for word in words
        for name in sorted(os.listdir(root / word))
        if name.lower().endswith(".wav") and f"{word}/{name}" not in held_out
    ]

    def clip(rel: str) -> LabelledClip:
        return LabelledClip(rel, path_clip_id(rel), (rel.split("/", 1)[0],))

    return LabelledSplits(
        name="Speech Commands v2",
        root=root,
        descriptors=[Label(i, w, w) for i, w in enumerate(words)],
        splits={
            "train": [clip(r) for r in train],
            "valid": [clip(r) for r in sorted(lists["valid"])],
            "test": [clip(r) for r in sorted(lists["test"])],
        },
    )
