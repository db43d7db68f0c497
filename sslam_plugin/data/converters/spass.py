"""SPASS: per-scene *_MatrixLabels*.csv (one row per event); 75 % of the sorted files train, the rest eval."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from ..labels import Label
from ..scan import AUDIO_EXTENSIONS, find_audio_files
from .records import LabelFormatError, LabelledSplits, PathLike, check_label, clips_with_ids, read_text_lines

__all__ = ["read_spass_labels", "spass"]

logger = logging.getLogger(__name__)


_FILE_COLUMN_HINTS = ("file", "name", "audio", "wav", "path")
_EVENT_CLASS_COLUMNS = ("class", "label", "class_name", "event_label")


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    return max(counts, key=counts.get) if any(counts.values()) else ","


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_spass_labels(path: PathLike) -> Tuple[List[str], List[Tuple[str, Tuple[str, ...]]]]:
    """Parse one SPASS scene's label CSV into (classes, [(file name, labels)]).

    Three layouts are read. The SPASS release's event layout: a header row with
    the file column (``audio_filename``) and a ``class`` column, one row per
    sound event, so a file appears once per event (other columns such as onsets
    are ignored). A matrix layout: a header naming the file column and then one
    column per class, each row a file and a number per class (> 0 = present).
    A list layout: each row the file, then class names. The delimiter (comma,
    semicolon or tab) is detected from the header row.
    """
    path = Path(path)
    lines = [line for line in read_text_lines(path)]
    if not lines:
        raise LabelFormatError(f"{path}: empty file")
    rows = list(csv.reader(lines, delimiter=_sniff_delimiter(lines[0])))
    header = [h.strip() for h in rows[0]]
    file_col = next((i for i, h in enumerate(header) if any(k in h.lower() for k in _FILE_COLUMN_HINTS)), 0)
    class_col = next((i for i, h in enumerate(header) if h.lower() in _EVENT_CLASS_COLUMNS), None)
    if class_col is not None:
        return _read_spass_events(path, rows, file_col, class_col)
    class_cols = [i for i, h in enumerate(header) if i != file_col and h]
    body = [(lineno, row) for lineno, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)]
    matrix = bool(class_cols) and all(
        _is_number(row[i].strip()) for _, row in body for i in class_cols if i < len(row) and row[i].strip()
    )
    if matrix and all(_is_number(h) for h in (header[i] for i in class_cols)):
        raise LabelFormatError(f"{path}:1: the header row must name the classes, got {header}")
    classes: List[str] = [header[i] for i in class_cols] if matrix else []
    entries: List[Tuple[str, Tuple[str, ...]]] = []
    seen: Set[str] = set()
    for lineno, row in body:
        if file_col >= len(row) or not row[file_col].strip():
            raise LabelFormatError(f"{path}:{lineno}: no file name in column {file_col + 1}")
        name = os.path.basename(row[file_col].strip().replace("\\", "/"))
        if name in seen:
            raise LabelFormatError(f"{path}:{lineno}: file {name!r} is listed twice")
        seen.add(name)
        if matrix:
            labels = tuple(header[i] for i in class_cols if i < len(row) and row[i].strip() and float(row[i]) > 0)
        else:
            labels = tuple(dict.fromkeys(c.strip() for i, c in enumerate(row) if i != file_col and c.strip()))
            classes.extend(label for label in labels if label not in classes)
        for label in labels:
            check_label(label, f"{path}:{lineno}: class")
        entries.append((name, labels))
    if not entries:
        raise LabelFormatError(f"{path}: no files listed")
    return (classes if matrix else sorted(classes)), entries


def _read_spass_events(
    path: Path, rows: List[List[str]], file_col: int, class_col: int
) -> Tuple[List[str], List[Tuple[str, Tuple[str, ...]]]]:
    """The event layout: one row per (file, class) event; a file's labels are its distinct classes."""
    by_file: Dict[str, List[str]] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if max(file_col, class_col) >= len(row) or not row[file_col].strip() or not row[class_col].strip():
            raise LabelFormatError(f"{path}:{lineno}: expected a file name and a class, got {row}")
        name = os.path.basename(row[file_col].strip().replace("\\", "/"))
        label = row[class_col].strip()
        check_label(label, f"{path}:{lineno}: class")
        labels = by_file.setdefault(name, [])
        if label not in labels:
            labels.append(label)
    if not by_file:
        raise LabelFormatError(f"{path}: no files listed")
    classes = sorted({label for labels in by_file.values() for label in labels})
    return classes, [(name, tuple(labels)) for name, labels in by_file.items()]


def _scene_of(csv_path: Path) -> str:
    match = re.search(r"MatrixLabels[_\- ]*(.*)$", csv_path.stem, flags=re.IGNORECASE)
    scene = match.group(1) if match and match.group(1) else csv_path.stem
    return re.sub(r"[^0-9A-Za-z_\-]+", "_", scene).strip("_").lower() or "scene"


def _index_names(folder: Path, extensions: Sequence[str]) -> Dict[str, str]:
    """{file name and file stem: path relative to folder} of the audio under ``folder``."""
    index: Dict[str, str] = {}
    for rel in find_audio_files(folder, extensions):
        base = os.path.basename(rel)
        index.setdefault(base, rel)
        index.setdefault(os.path.splitext(base)[0], rel)
    return index


def _scene_audio(root: Path, csv_path: Path, scene: str, names: Sequence[str], extensions: Sequence[str]):
    """The folder holding most of a scene's files: beside the CSV, or a folder named after the scene."""
    candidates = [csv_path.parent]
    for depth_glob in ("*", "*/*", "*/*/*"):
        candidates += [p for p in sorted(root.glob(depth_glob)) if p.is_dir() and scene in p.name.lower()]
    best: Tuple[int, Optional[Path], Dict[str, str]] = (0, None, {})
    for folder in dict.fromkeys(candidates):
        index = _index_names(folder, extensions)
        hits = sum(1 for n in names if n in index)
        if hits > best[0]:
            best = (hits, folder, index)
        if hits == len(names):
            break
    if best[1] is None:
        raise LabelFormatError(
            f"{csv_path}: none of its {len(names)} files (e.g. {names[0]!r}) was found beside it or in a "
            f"folder under {root} whose name contains {scene!r}"
        )
    return best[1], best[2]


def spass(
    root: PathLike, train_fraction: float = 0.75, extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> Dict[str, LabelledSplits]:
    """One set per SPASS scene (keyed by the scene's name in lower case) from its ``*_MatrixLabels*.csv``.

    The paper's split: the file names sorted, the first ``train_fraction``
    (rounded down) are ``train``, the rest ``eval``.
    """
    root = Path(root)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    csv_paths = sorted(p for p in root.rglob("*.csv") if "matrixlabels" in p.name.lower())
    if not csv_paths:
        raise LabelFormatError(f"{root}: no *_MatrixLabels*.csv files found")
    sets = {}
    for csv_path in csv_paths:
        scene = _scene_of(csv_path)
        if scene in sets:
            raise LabelFormatError(f"{csv_path}: a second label file for scene {scene!r}")
        classes, entries = read_spass_labels(csv_path)
        entries.sort(key=lambda e: e[0])
        audio_root, index = _scene_audio(root, csv_path, scene, [n for n, _ in entries], extensions)
        clips = clips_with_ids([(index.get(name, name), labels) for name, labels in entries], f"SPASS {scene}")
        n_train = int(len(clips) * train_fraction)
        sets[scene] = LabelledSplits(
            name=f"SPASS {scene}",
            root=audio_root,
            descriptors=[Label(i, c, c) for i, c in enumerate(classes)],
            splits={"train": clips[:n_train], "eval": clips[n_train:]},
        )
    return sets
