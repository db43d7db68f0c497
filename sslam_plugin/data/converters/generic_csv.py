"""Any collection: path,labels CSV rows."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Set

from ..labels import Label
from .records import LabelFormatError, LabelledClip, LabelledSplits, PathLike, check_label, clips_with_ids, read_text_lines
from .writer import read_descriptor_rows

__all__ = ["generic_csv"]

logger = logging.getLogger(__name__)


_PATH_HEADERS = {"path", "file", "filename", "file_name", "audio", "wav", "clip"}


def generic_csv(
    split_csvs: Mapping[str, PathLike],
    audio_dir: PathLike,
    label_sep: str = ",",
    delimiter: str = ",",
    descriptors: Optional[PathLike] = None,
) -> LabelledSplits:
    """Splits from CSV files of ``path,labels`` rows, paths relative to ``audio_dir``.

    Labels are split on ``label_sep``; with a comma both a quoted ``"a,b"`` and
    unquoted extra columns (``x.wav,a,b``) work. A header row (first cell
    ``path``, ``file``, ``filename``...) and ``#`` comment lines are skipped.
    Classes come from ``descriptors`` (a ``label_descriptors.csv``) when given,
    else are the sorted labels found.
    """
    if not split_csvs:
        raise LabelFormatError("give at least one split=CSV")
    audio_dir = Path(audio_dir)
    audio_abs = Path(os.path.abspath(audio_dir))
    fixed = read_descriptor_rows(descriptors) if descriptors is not None else None
    known = {d.id for d in fixed} if fixed is not None else None
    splits: Dict[str, List[LabelledClip]] = {}
    found: Set[str] = set()
    for split, csv_path in split_csvs.items():
        csv_path = Path(csv_path)
        clips, seen = [], set()
        reader = csv.reader(read_text_lines(csv_path), delimiter=delimiter)
        first = True
        for row in reader:
            lineno = reader.line_num
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if first and row[0].strip().lower() in _PATH_HEADERS:
                first = False
                continue
            first = False
            rel = row[0].strip().replace("\\", "/")
            if os.path.isabs(rel):
                try:
                    rel = Path(os.path.abspath(rel)).relative_to(audio_abs).as_posix()
                except ValueError:
                    raise LabelFormatError(f"{csv_path}:{lineno}: {rel} is not under the audio folder {audio_dir}") from None
            rel = rel[2:] if rel.startswith("./") else rel
            if not rel or rel in seen:
                raise LabelFormatError(f"{csv_path}:{lineno}: {'empty path' if not rel else f'{rel} is listed twice'}")
            seen.add(rel)
            labels = tuple(dict.fromkeys(p.strip() for cell in row[1:] for p in cell.split(label_sep) if p.strip()))
            for label in labels:
                check_label(label, f"{csv_path}:{lineno}: label")
                if known is not None and label not in known:
                    raise LabelFormatError(f"{csv_path}:{lineno}: label {label!r} is not in {descriptors}")
            found.update(labels)
            clips.append((rel, labels))
        splits[split] = clips_with_ids(clips, f"{csv_path}")
    if fixed is None:
        fixed = [Label(i, label, label) for i, label in enumerate(sorted(found))]
    return LabelledSplits(name="CSV", root=audio_dir, descriptors=fixed, splits=splits)
