"""What the label converters produce: clips with labels per split, class descriptors, reports."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from ..labels import Label, clip_id, path_clip_id

__all__ = [
    "LabelFormatError",
    "LabelledClip",
    "LabelledSplits",
    "LabelReport",
    "check_label",
    "read_text_lines",
    "clips_with_ids",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]


class LabelFormatError(ValueError):
    """Metadata that cannot be converted; the message names the file, line and what to do."""


@dataclass(frozen=True)
class LabelledClip:
    """One clip: ``path`` relative to its set's root (``/`` separators), an id and its labels."""

    path: str
    clip_id: str
    labels: Tuple[str, ...]


@dataclass
class LabelledSplits:
    """What a converter found: the clips of each split, before their audio is checked."""

    name: str
    root: Path
    descriptors: List[Label]
    splits: Dict[str, List[LabelledClip]]
    missing: Dict[str, List[str]] = field(default_factory=dict)  # split -> clip ids without a file
    weight_splits: Tuple[str, ...] = ()

    def check(self) -> None:
        """Every label is described, ids are unique and fit the file formats."""
        known = set()
        for d in self.descriptors:
            check_label(d.id, f"{self.name}: label id")
            if d.id in known:
                raise LabelFormatError(f"{self.name}: label id {d.id!r} is described twice")
            known.add(d.id)
        for split, clips in self.splits.items():
            ids = set()
            for clip in clips:
                if "\t" in clip.clip_id or "\n" in clip.clip_id:
                    raise LabelFormatError(f"{self.name}: clip id {clip.clip_id!r} contains a tab or line break")
                if clip.clip_id in ids:
                    raise LabelFormatError(f"{self.name}: clip id {clip.clip_id!r} occurs twice in split {split!r}")
                ids.add(clip.clip_id)
                unknown = [label for label in clip.labels if label not in known]
                if unknown:
                    raise LabelFormatError(
                        f"{self.name}: clip {clip.clip_id!r} of split {split!r} has labels {unknown} "
                        "that are not in the label descriptors"
                    )


@dataclass
class LabelReport:
    """What :func:`write_label_manifests` wrote for one :class:`LabelledSplits`."""

    name: str
    dest: Path
    listed: Dict[str, int] = field(default_factory=dict)
    written: Dict[str, int] = field(default_factory=dict)
    rejected: Dict[str, int] = field(default_factory=dict)  # category -> distinct files
    missing: Dict[str, int] = field(default_factory=dict)  # split -> listed ids without a file

    def summary(self) -> str:
        splits = ", ".join(f"{s} {self.written[s]}/{self.listed[s]}" for s in self.written)
        line = f"{self.name} -> {self.dest}: clips written/listed: {splits}"
        if any(self.missing.values()):
            missing = ", ".join(f"{s} {n}" for s, n in self.missing.items() if n)
            line += f"; listed segments with no audio file: {missing} (missing.tsv)"
        if self.rejected:
            rejected = ", ".join(f"{c} {n}" for c, n in sorted(self.rejected.items()))
            line += f"; unusable files left out: {rejected} (rejected.tsv)"
        return line


def check_label(label: str, what: str) -> str:
    """``label`` if the .lbl format can hold it, else LabelFormatError."""
    if not label or label != label.strip() or any(ch in label for ch in ",\t\n\r"):
        raise LabelFormatError(
            f"{what} {label!r} is empty, has surrounding spaces, or contains a comma, tab or line break; "
            "the .lbl format (clip_id<TAB>label1,label2) cannot hold it"
        )
    return label


def read_text_lines(path: Path) -> List[str]:
    """A metadata file's lines (BOM removed); LabelFormatError when it is missing."""
    if not path.is_file():
        raise LabelFormatError(f"{path}: file not found")
    return path.read_text(encoding="utf-8-sig").splitlines()


def clips_with_ids(entries: Sequence[Tuple[str, Tuple[str, ...]]], what: str) -> List[LabelledClip]:
    """Clips with file-name ids, or relative-path ids when file names repeat among ``entries``."""
    ids = [clip_id(rel) for rel, _ in entries]
    if len(set(ids)) < len(ids):
        logger.warning("%s: file names repeat across folders; clip ids are relative paths without extension", what)
        ids = [path_clip_id(rel) for rel, _ in entries]
    return [LabelledClip(rel, cid, labels) for (rel, labels), cid in zip(entries, ids)]
