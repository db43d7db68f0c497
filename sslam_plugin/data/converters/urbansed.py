"""URBAN-SED: annotations/{split}/*.txt (onset, offset, label) as clip-level multi-labels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Sequence, Set, Tuple

from ..labels import Label, clip_id
from ..scan import AUDIO_EXTENSIONS
from .records import LabelFormatError, LabelledClip, LabelledSplits, PathLike, check_label, read_text_lines

__all__ = ["read_urbansed_annotation", "urbansed"]

logger = logging.getLogger(__name__)


def read_urbansed_annotation(path: PathLike) -> List[Tuple[float, float, str]]:
    """``(onset, offset, label)`` events of one URBAN-SED ``.txt`` (tab- or space-separated)."""
    path = Path(path)
    events = []
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) != 3:
            raise LabelFormatError(f"{path}:{lineno}: expected 'onset<TAB>offset<TAB>label', got {line!r}")
        try:
            onset, offset = float(fields[0]), float(fields[1])
        except ValueError:
            raise LabelFormatError(f"{path}:{lineno}: onset/offset {fields[0]!r}, {fields[1]!r} are not numbers") from None
        if offset < onset:
            raise LabelFormatError(f"{path}:{lineno}: offset {offset} is before onset {onset}")
        label = fields[2].strip()
        check_label(label, f"{path}:{lineno}: label")
        events.append((onset, offset, label))
    return events


def urbansed(root: PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> LabelledSplits:
    """URBAN-SED clip-level labels: the distinct event labels of each soundscape.

    Splits are the folders of ``root/annotations`` (``train``, ``validate``,
    ``test``); the audio of ``annotations/S/x.txt`` is ``audio/S/x.wav`` (or
    another of ``extensions``).
    """
    root = Path(root)
    ann_root, audio_root = root / "annotations", root / "audio"
    if not ann_root.is_dir():
        raise LabelFormatError(f"{ann_root}: not found; point at the URBAN-SED folder holding annotations/ and audio/")
    split_dirs = sorted(d for d in ann_root.iterdir() if d.is_dir())
    if not split_dirs:
        raise LabelFormatError(f"{ann_root}: no split folders (train, validate, test)")
    splits: Dict[str, List[LabelledClip]] = {}
    all_labels: Set[str] = set()
    for split_dir in split_dirs:
        clips = []
        for txt in sorted(split_dir.glob("*.txt")):
            labels = tuple(sorted({label for _, _, label in read_urbansed_annotation(txt)}))
            all_labels.update(labels)
            rel = f"{split_dir.name}/{txt.stem}.wav"
            for ext in extensions:
                candidate = f"{split_dir.name}/{txt.stem}.{ext}"
                if (audio_root / candidate).exists():
                    rel = candidate
                    break
            clips.append(LabelledClip(rel, clip_id(rel), labels))
        splits[split_dir.name] = clips
    return LabelledSplits(
        name="URBAN-SED",
        root=audio_root,
        descriptors=[Label(i, label, label.replace("_", " ")) for i, label in enumerate(sorted(all_labels))],
        splits=splits,
    )
