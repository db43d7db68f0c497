"""Labelled manifests for fine-tuning and evaluation datasets.

Every converter turns a dataset's own metadata into a :class:`LabelledSplits`; one
writer (:func:`write_label_manifests`) then reads the audio headers (in parallel,
each file once) and writes, per output folder:

* ``{split}.tsv``: a fairseq manifest (root line, then ``path<TAB>num_samples``);
* ``{split}.lbl``: ``clip_id<TAB>label1,label2``, line *i* describing clip *i*
  of ``{split}.tsv``. The clip id is the file name without folder or
  extension (the key :func:`sslam_plugin.data.labels.clip_id` derives from a
  manifest line), except where file names repeat within a split (Speech
  Commands: ``yes/0a7c2a8d_nohash_0.wav`` and ``no/0a7c2a8d_nohash_0.wav``),
  where it is the relative path without extension;
* ``label_descriptors.csv``: ``index,label_id,display_name`` rows, no header;
* ``rejected.tsv``: listed files that are missing, empty or unreadable (left
  out), root line then ``path<TAB>reason``;
* ``missing.tsv`` (AudioSet): ``split<TAB>clip_id`` of listed segments with no
  downloaded file;
* ``{split}_weights.csv`` (AudioSet ``as2m/train_weights.csv``): one sampling weight per line,
  aligned with ``{split}.tsv``: the sum over a clip's labels of
  ``1 / (number of clips in the split with that label)``.

Converters (each from the dataset's documented layout):

* :func:`audioset`: segment CSVs (``# ...`` header lines,
  ``YTID, start_seconds, end_seconds, "label1,label2"``) plus
  ``class_labels_indices.csv``; files matched by YouTube id; folders ``as20k``
  and ``as2m`` (``train`` and ``eval`` each).
* :func:`esc50`: ``meta/esc50.csv``; one output folder per held-out fold.
* :func:`speech_commands`: Speech Commands v2 word folders with
  ``validation_list.txt`` and ``testing_list.txt``; ``_background_noise_`` excluded.
* :func:`spass`: per-scene ``*_MatrixLabels*.csv``; first 75 % of the sorted
  file names train, the rest eval; one output folder per scene.
* :func:`urbansed`: ``annotations/{split}/*.txt`` (onset, offset, label);
  clip-level multi-labels.
* :func:`generic_csv`: ``path,labels`` rows for anything else.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .labels import read_label_descriptors
from .parallel import parallel_map
from .scan import (
    AUDIO_EXTENSIONS,
    AudioHeader,
    check_can_write,
    find_audio_files,
    probe_header,
    reason_category,
    write_lines,
    write_manifest,
    write_rejected,
)

__all__ = [
    "LabelledClip",
    "file_clip_id",
    "LabelDescriptor",
    "LabelledSplits",
    "LabelReport",
    "LabelFormatError",
    "read_descriptor_rows",
    "write_label_descriptors",
    "write_labels",
    "sampling_weights",
    "write_sampling_weights",
    "write_label_manifests",
    "read_audioset_segments",
    "audioset",
    "esc50",
    "speech_commands",
    "spass",
    "urbansed",
    "generic_csv",
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


@dataclass(frozen=True)
class LabelDescriptor:
    """One class: its output index, the id written in ``.lbl`` files and a readable name."""

    index: int
    label_id: str
    display_name: str


@dataclass
class LabelledSplits:
    """What a converter found: the clips of each split, before their audio is checked."""

    name: str
    root: Path
    descriptors: List[LabelDescriptor]
    splits: Dict[str, List[LabelledClip]]
    missing: Dict[str, List[str]] = field(default_factory=dict)  # split -> clip ids without a file
    weight_splits: Tuple[str, ...] = ()

    def check(self) -> None:
        """Every label is described, ids are unique and fit the file formats."""
        known = set()
        for d in self.descriptors:
            _check_label(d.label_id, f"{self.name}: label id")
            if d.label_id in known:
                raise LabelFormatError(f"{self.name}: label id {d.label_id!r} is described twice")
            known.add(d.label_id)
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


def _check_label(label: str, what: str) -> str:
    if not label or label != label.strip() or any(ch in label for ch in ",\t\n\r"):
        raise LabelFormatError(
            f"{what} {label!r} is empty, has surrounding spaces, or contains a comma, tab or line break; "
            "the .lbl format (clip_id<TAB>label1,label2) cannot hold it"
        )
    return label


def _read_text_lines(path: Path) -> List[str]:
    if not path.is_file():
        raise LabelFormatError(f"{path}: file not found")
    return path.read_text(encoding="utf-8-sig").splitlines()


def _strip_ext(path: str) -> str:
    stem, ext = os.path.splitext(path)
    return stem if ext else path


def file_clip_id(rel_path: str) -> str:
    """``folder/name.wav`` -> ``name``: the clip id of a manifest line."""
    return _strip_ext(rel_path.replace("\\", "/").rsplit("/", 1)[-1])


def _with_ids(entries: Sequence[Tuple[str, Tuple[str, ...]]], what: str) -> List[LabelledClip]:
    """Clips with file-name ids, or relative-path ids when file names repeat among ``entries``."""
    ids = [file_clip_id(rel) for rel, _ in entries]
    if len(set(ids)) < len(ids):
        logger.warning("%s: file names repeat across folders; clip ids are relative paths without extension", what)
        ids = [_strip_ext(rel) for rel, _ in entries]
    return [LabelledClip(rel, cid, labels) for (rel, labels), cid in zip(entries, ids)]


# ---------------------------------------------------------------- shared writers


def read_descriptor_rows(path: PathLike) -> List[LabelDescriptor]:
    """Read ``index,label_id,display_name`` rows (our ``label_descriptors.csv`` or AudioSet's
    ``class_labels_indices.csv``, whose header row is skipped)."""
    try:
        labels = read_label_descriptors(path)
    except (FileNotFoundError, ValueError) as err:
        raise LabelFormatError(str(err)) from err
    for label_id in labels.ids:
        _check_label(label_id, f"{path}: label id")
    return [LabelDescriptor(i, label_id, name) for i, (label_id, name) in enumerate(zip(labels.ids, labels.names))]


def write_label_descriptors(path: PathLike, descriptors: Sequence[LabelDescriptor]) -> None:
    """``index,label_id,display_name`` rows, no header (display names quoted when they hold commas)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for d in sorted(descriptors, key=lambda d: d.index):
        writer.writerow([d.index, d.label_id, d.display_name])
    write_lines(Path(path), buffer.getvalue().splitlines())


def write_labels(path: PathLike, clips: Iterable[LabelledClip]) -> None:
    """``clip_id<TAB>label1,label2`` lines, in the order given."""
    write_lines(Path(path), (f"{c.clip_id}\t{','.join(c.labels)}" for c in clips))


def sampling_weights(label_lists: Sequence[Sequence[str]]) -> List[float]:
    """Per clip, the sum over its labels of ``1 / (clips carrying that label)``.

    Sampling clips in proportion to these weights balances rare and common
    classes (the AS-2M fine-tuning recipe). A clip without labels gets 0.
    """
    counts = Counter(label for labels in label_lists for label in set(labels))
    return [sum(1.0 / counts[label] for label in set(labels)) for labels in label_lists]


def write_sampling_weights(path: PathLike, weights: Sequence[float]) -> None:
    """One weight per line (``%.9g``), aligned with the manifest's clips."""
    write_lines(Path(path), (f"{w:.9g}" for w in weights))


def _outputs(dataset: LabelledSplits, dest: Path) -> List[Path]:
    paths = [dest / "label_descriptors.csv", dest / "rejected.tsv"]
    for split in dataset.splits:
        paths += [dest / f"{split}.tsv", dest / f"{split}.lbl"]
    paths += [dest / f"{split}_weights.csv" for split in dataset.weight_splits]
    if dataset.missing:
        paths.append(dest / "missing.tsv")
    return paths


def write_label_manifests(
    labelled: Mapping[str, LabelledSplits],
    dest: PathLike,
    jobs: int = 1,
    force: bool = False,
    show_progress: bool = False,
) -> Dict[str, LabelReport]:
    """Check the audio of every set and write its files into ``dest / key`` (``""``: ``dest`` itself).

    A file shared by several sets (the folds of ESC-50) is read once. Raises
    FileExistsError before reading anything when an output exists and
    ``force`` is false.
    """
    dest = Path(dest)
    targets = {key: (dest / key if key else dest) for key in labelled}
    for key, dataset in labelled.items():
        dataset.check()
        check_can_write(_outputs(dataset, targets[key]), force)

    unique: Dict[Tuple[Path, str], None] = {}
    for dataset in labelled.values():
        for clips in dataset.splits.values():
            for clip in clips:
                unique[(dataset.root, clip.path)] = None
    keys = list(unique)
    headers = parallel_map(
        probe_header,
        [os.path.join(root, rel) for root, rel in keys],
        jobs=jobs,
        desc="reading headers",
        show_progress=show_progress,
    )
    header_of = dict(zip(keys, headers))

    reports = {}
    for key, dataset in labelled.items():
        out = targets[key]
        out.mkdir(parents=True, exist_ok=True)
        root = Path(os.path.realpath(dataset.root))
        report = LabelReport(name=dataset.name, dest=out)
        rejected: Dict[str, str] = {}
        for split, clips in dataset.splits.items():
            kept: List[Tuple[LabelledClip, AudioHeader]] = []
            for clip in clips:
                header = header_of[(dataset.root, clip.path)]
                if isinstance(header, str):
                    rejected[clip.path] = header
                else:
                    kept.append((clip, header))
            write_manifest(out / f"{split}.tsv", root, ((c.path, h.frames) for c, h in kept))
            write_labels(out / f"{split}.lbl", (c for c, _ in kept))
            if split in dataset.weight_splits:
                write_sampling_weights(out / f"{split}_weights.csv", sampling_weights([c.labels for c, _ in kept]))
            unlabelled = sum(1 for c, _ in kept if not c.labels)
            if unlabelled:
                logger.warning("%s: %d clips of split %s have no labels", dataset.name, unlabelled, split)
            report.listed[split] = len(clips) + len(dataset.missing.get(split, ()))
            report.written[split] = len(kept)
            report.missing[split] = len(dataset.missing.get(split, ()))
        write_label_descriptors(out / "label_descriptors.csv", dataset.descriptors)
        write_rejected(out / "rejected.tsv", root, sorted(rejected.items()))
        if dataset.missing:
            write_lines(
                out / "missing.tsv",
                (f"{split}\t{clip_id}" for split, ids in dataset.missing.items() for clip_id in ids),
            )
        report.rejected = dict(Counter(reason_category(r) for r in rejected.values()))
        logger.info("%s", report.summary())
        reports[key] = report
    return reports


# ---------------------------------------------------------------- AudioSet

YTID_LENGTH = 11


def read_audioset_segments(path: PathLike) -> List[Tuple[str, Tuple[str, ...]]]:
    """Parse an AudioSet segment CSV into ``(ytid, labels)`` in file order.

    Lines starting with ``#`` (the creation date, counts and column names) and
    blank lines are skipped; a row is ``YTID, start, end, "label1,label2"``
    (spaces after the commas, the label list quoted).
    """
    path = Path(path)
    segments = []
    for lineno, line in enumerate(_read_text_lines(path), start=1):
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
    class_labels: PathLike,
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
    ``class_labels`` (``class_labels_indices.csv``).
    """
    descriptors = read_descriptor_rows(class_labels)
    known = {d.label_id for d in descriptors}
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
        ytid = _ytid_of(os.path.splitext(os.path.basename(rel))[0], listed, pattern)
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
                clips.append(LabelledClip(file_of[ytid], file_clip_id(file_of[ytid]), labels))
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


# ---------------------------------------------------------------- ESC-50


def esc50(root: PathLike, audio_dir: Optional[PathLike] = None) -> Dict[str, LabelledSplits]:
    """One set per held-out fold, keyed ``fold1`` ... ``fold5``: ``train`` = the other folds, ``eval`` = that fold.

    Reads ``root/meta/esc50.csv`` (``filename,fold,target,category,...``); the
    audio is ``root/audio`` unless ``audio_dir`` names, e.g., a resampled copy.
    Labels are the category names, indexed in ``target`` order.
    """
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    audio_root = Path(audio_dir) if audio_dir is not None else root / "audio"
    reader = csv.DictReader(_read_text_lines(meta))
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
        _check_label(category, f"{meta}:{lineno}: category")
        if category_of.setdefault(target, category) != category:
            raise LabelFormatError(
                f"{meta}:{lineno}: target {target} is {category!r} here but {category_of[target]!r} earlier"
            )
        filename = (row["filename"] or "").strip()
        clips_by_fold.setdefault(fold, []).append(LabelledClip(filename, file_clip_id(filename), (category,)))
    if len(set(category_of.values())) != len(category_of):
        raise LabelFormatError(f"{meta}: one category has several targets")
    if len(clips_by_fold) < 2:
        raise LabelFormatError(f"{meta}: found folds {sorted(clips_by_fold)}; cross-validation needs at least two")
    # index = target for the full dataset; renumbered without gaps for a subset such as ESC-10
    descriptors = [LabelDescriptor(i, c, c.replace("_", " ")) for i, (_, c) in enumerate(sorted(category_of.items()))]
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


# ---------------------------------------------------------------- Speech Commands v2


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
        for lineno, line in enumerate(_read_text_lines(path), start=1):
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
        return LabelledClip(rel, _strip_ext(rel), (rel.split("/", 1)[0],))

    return LabelledSplits(
        name="Speech Commands v2",
        root=root,
        descriptors=[LabelDescriptor(i, w, w) for i, w in enumerate(words)],
        splits={
            "train": [clip(r) for r in train],
            "valid": [clip(r) for r in sorted(lists["valid"])],
            "test": [clip(r) for r in sorted(lists["test"])],
        },
    )


# ---------------------------------------------------------------- SPASS

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
    lines = [line for line in _read_text_lines(path)]
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
            _check_label(label, f"{path}:{lineno}: class")
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
        _check_label(label, f"{path}:{lineno}: class")
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
        clips = _with_ids([(index.get(name, name), labels) for name, labels in entries], f"SPASS {scene}")
        n_train = int(len(clips) * train_fraction)
        sets[scene] = LabelledSplits(
            name=f"SPASS {scene}",
            root=audio_root,
            descriptors=[LabelDescriptor(i, c, c) for i, c in enumerate(classes)],
            splits={"train": clips[:n_train], "eval": clips[n_train:]},
        )
    return sets


# ---------------------------------------------------------------- URBAN-SED


def read_urbansed_annotation(path: PathLike) -> List[Tuple[float, float, str]]:
    """``(onset, offset, label)`` events of one URBAN-SED ``.txt`` (tab- or space-separated)."""
    path = Path(path)
    events = []
    for lineno, line in enumerate(_read_text_lines(path), start=1):
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
        _check_label(label, f"{path}:{lineno}: label")
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
            clips.append(LabelledClip(rel, file_clip_id(rel), labels))
        splits[split_dir.name] = clips
    return LabelledSplits(
        name="URBAN-SED",
        root=audio_root,
        descriptors=[LabelDescriptor(i, label, label.replace("_", " ")) for i, label in enumerate(sorted(all_labels))],
        splits=splits,
    )


# ---------------------------------------------------------------- generic CSV

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
    known = {d.label_id for d in fixed} if fixed is not None else None
    splits: Dict[str, List[LabelledClip]] = {}
    found: Set[str] = set()
    for split, csv_path in split_csvs.items():
        csv_path = Path(csv_path)
        clips, seen = [], set()
        reader = csv.reader(_read_text_lines(csv_path), delimiter=delimiter)
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
                _check_label(label, f"{csv_path}:{lineno}: label")
                if known is not None and label not in known:
                    raise LabelFormatError(f"{csv_path}:{lineno}: label {label!r} is not in {descriptors}")
            found.update(labels)
            clips.append((rel, labels))
        splits[split] = _with_ids(clips, f"{csv_path}")
    if fixed is None:
        fixed = [LabelDescriptor(i, label, label) for i, label in enumerate(sorted(found))]
    return LabelledSplits(name="CSV", root=audio_dir, descriptors=fixed, splits=splits)
