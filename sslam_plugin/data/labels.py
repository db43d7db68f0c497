"""Clip labels: ``label_descriptors.csv`` and ``{split}.lbl`` files.

``label_descriptors.csv``: ``index,label_id,display_name`` per line (no header).
``{split}.lbl``: ``clip_id<TAB>label_id1,label_id2`` per line; the clip id is
the manifest entry's path without extension (``yes/0a7c2a8d_nohash_0``) or,
where those are unique, just its file name without extension.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

import torch

from .row_tables import IntListTable

__all__ = ["Label", "placeholder_labels", "are_placeholders", "LabelSet", "read_label_descriptors", "read_clip_labels", "clip_id", "path_clip_id", "clip_label_key", "labels_for_files", "multi_hot"]

T = TypeVar("T")


@dataclass(frozen=True)
class Label:
    """One class: its index (the head's output), the id written in ``.lbl`` files, a readable name.

    The one label record of the package: converters write it, tasks read it,
    exports and inference report it.
    """

    index: int
    id: str
    name: str


def placeholder_labels(num_classes: int) -> List[Label]:
    """``class_0 .. class_{n-1}``: the labels of a head whose label names were never stored."""
    return [Label(i, f"class_{i}", f"class_{i}") for i in range(num_classes)]


def are_placeholders(labels: Sequence[Label]) -> bool:
    """Whether ``labels`` are :func:`placeholder_labels` (nothing known about the classes)."""
    return list(labels) == placeholder_labels(len(labels))


@dataclass(frozen=True)
class LabelSet:
    """A task's classes, in head order (``labels[i].index == i``)."""

    labels: Tuple[Label, ...]

    @classmethod
    def from_ids(cls, ids: Sequence[str], names: Optional[Sequence[str]] = None) -> "LabelSet":
        names = list(ids) if names is None else list(names)
        return cls(tuple(Label(i, str(a), str(b)) for i, (a, b) in enumerate(zip(ids, names))))

    @property
    def ids(self) -> List[str]:
        return [label.id for label in self.labels]

    @property
    def names(self) -> List[str]:
        return [label.name for label in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Label]:
        return iter(self.labels)

    def index(self) -> Dict[str, int]:
        return {label.id: label.index for label in self.labels}


def read_label_descriptors(path: Union[str, Path]) -> LabelSet:
    """Read ``index,label_id,display_name`` rows; indices must be 0..C-1.

    Also reads AudioSet's ``class_labels_indices.csv``: a header row (first
    field not an integer) is skipped, and a display name may be quoted or hold
    unquoted commas. Raises ValueError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label descriptors not found (expected index,label_id,display_name rows)")
    rows: Dict[int, tuple] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            try:
                index = int(row[0])
            except ValueError:
                if lineno == 1:
                    continue  # a header row
                raise ValueError(f"{path}:{lineno}: class index {row[0]!r} is not an integer") from None
            if len(row) < 2 or not row[1].strip():
                raise ValueError(f"{path}:{lineno}: expected index,label_id[,display_name], got {row}")
            if index in rows:
                raise ValueError(f"{path}:{lineno}: class index {index} is listed twice")
            name = ",".join(row[2:]).strip() if len(row) > 2 else row[1].strip()
            rows[index] = (row[1].strip(), name)
    if not rows:
        raise ValueError(f"{path}: no label descriptors found")
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(f"{path}: class indices must be 0..{len(rows) - 1} without gaps")
    return LabelSet.from_ids([rows[i][0] for i in range(len(rows))], [rows[i][1] for i in range(len(rows))])


# The one clip-id rule of .lbl files (written by the converters, read by training, evaluation and
# validation): a clip is named by its file name without folder or extension, or, where file names
# repeat across folders, by its relative path without extension. Readers try the path first.
# A packed clip goes by the name it was packed under: a zip entry (archive.zip:OFFSET:LENGTH) by
# the name of the member its offset points at (sslam-pack names members by the clips' paths), an
# HDF5 entry (part.h5/CLIP_ID) by its CLIP_ID. Naming a zip member reads the archive's directory
# (once per archive and process), found under ``root`` (the manifest's root) when given.


def _packed_name(path: str, root: Optional[Union[str, Path]]) -> Optional[Tuple[str, bool]]:
    """(name, whether it ends in an extension to drop) of a packed entry; None for a plain path."""
    from .packed_audio import H5Entry, ZipEntry, parse_entry
    from .scan import AUDIO_EXTENSIONS
    from .zip_members import zip_member_name

    entry = parse_entry(os.path.join(root, path) if root is not None else path)
    if isinstance(entry, ZipEntry):
        member = zip_member_name(entry)
        return (member, True) if member else (path, False)  # unknown member: the entry names itself
    if isinstance(entry, H5Entry):
        return entry.key, entry.key.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS
    return None


def path_clip_id(relative_path: str, root: Optional[Union[str, Path]] = None) -> str:
    """Manifest entry -> its relative path without extension (``yes/0a7c.wav`` -> ``yes/0a7c``):
    the clip id where file names repeat across folders. A packed entry: that of its member name or
    HDF5 dataset (see above)."""
    path = relative_path.replace("\\", "/")
    strip = True
    if ":" in path or "5/" in path:  # cheap test before the packed-entry patterns (.zip:, .h5/, .hdf5/)
        packed = _packed_name(path, root)
        if packed is not None:
            path, strip = packed
            path = path.replace("\\", "/")
    folder, _, name = path.rpartition("/")
    stem = name.rsplit(".", 1)[0] if strip and "." in name else name
    return f"{folder}/{stem}" if folder else stem


def clip_id(relative_path: str, root: Optional[Union[str, Path]] = None) -> str:
    """Manifest entry -> clip id (file name without folder or extension: ``yes/0a7c.wav`` -> ``0a7c``)."""
    return path_clip_id(relative_path, root).rsplit("/", 1)[-1]


def clip_label_key(relative_path: str, by_clip: Mapping[str, T], root: Optional[Union[str, Path]] = None) -> Optional[str]:
    """The key of ``by_clip`` (clip id -> labels) naming a manifest entry: its :func:`path_clip_id`,
    else its :func:`clip_id`, else (a packed entry) the entry or its last part; None when none is there."""
    path = path_clip_id(relative_path, root)
    # a packed entry named while its archive could not be read goes by the entry itself (or its last part)
    packed = (relative_path, relative_path.rsplit("/", 1)[-1]) if ":" in relative_path or "5/" in relative_path else ()
    for key in (path, path.rsplit("/", 1)[-1], *packed):
        if key in by_clip:
            return key
    return None


def labels_for_files(files: Sequence[str], by_clip: Dict[str, List[int]], source: str,
                     root: Optional[Union[str, Path]] = None) -> IntListTable:
    """Class indices of each manifest entry, matched by path without extension, else by file name.

    Packed (:class:`~.row_tables.IntListTable`: ``table[i]`` is a list of ``int``) because
    datasets keep it for the whole run, shared with their DataLoader workers. ``root``: the
    manifest's root, where packed entries' archives are found (:func:`clip_label_key`).
    Raises ValueError naming ``source`` and the first entry without labels.
    """
    out: List[List[int]] = []
    missing = 0
    first_missing = ""
    for rel in files:
        key = clip_label_key(rel, by_clip, root)
        if key is None:
            missing += 1
            if missing == 1:
                first_missing = rel
        out.append(by_clip[key] if key is not None else [])
    if missing:
        raise ValueError(f"{source}: {missing} clips have no labels (first: {first_missing!r})")
    return IntListTable.from_lists(out)


def read_clip_labels(path: Union[str, Path], labels: LabelSet) -> Dict[str, List[int]]:
    """Read ``clip_id<TAB>label,label`` lines into class indices per clip id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    index = labels.index()
    out: Dict[str, List[int]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'clip_id<TAB>label1,label2', got {line!r}")
        unknown = [lab for lab in parts[1].split(",") if lab and lab not in index]
        if unknown:
            raise ValueError(f"{path}:{lineno}: labels {unknown} are not in label_descriptors.csv")
        out[parts[0]] = [index[lab] for lab in parts[1].split(",") if lab]
    return out


def multi_hot(indices: Sequence[int], num_classes: int) -> torch.Tensor:
    """(num_classes,) float32 with ones at ``indices``."""
    target = torch.zeros(num_classes)
    target[list(indices)] = 1.0
    return target
