"""The detection data folder: converters from the field's formats, and reading a split back.

A detection data folder is a labelled folder (``sslam-prepare-labels``' layout) plus strong labels::

    {split}.tsv             fairseq audio manifest (all clips of the split)
    {split}.lbl             clip_id<TAB>label1,label2: clip-level labels (weak clips use these)
    {split}_strong.tsv      DCASE strong TSV by clip id: the strongly annotated clips
    label_descriptors.csv   index,label_id,display_name

A clip in ``{split}_strong.tsv`` is strong (a line ``clip<TAB><TAB><TAB>``: annotated, no events);
otherwise a clip with labels in ``{split}.lbl`` is weak; a clip with neither is unlabelled.

Converters (each checks every event against the clip's duration read from its audio header and
against the label set before anything is written):

* :func:`dcase_dataset` - DCASE/DESED strong, weak and unlabelled TSVs, several per split;
* :func:`urbansed_dataset` - URBAN-SED's ``annotations/{split}/*.txt``;
* :func:`add_polyphony_strong_labels` - the ``{split}_events.tsv`` of ``sslam-make-polyphonic``.

No fairseq needed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from ..data.converters.records import LabelledClip, LabelledSplits
from ..data.labels import Label, LabelSet, clip_id, read_clip_labels, read_label_descriptors
from ..data.manifest import read_manifest
from ..data.scan import probe_header
from .strong_labels import (
    StrongLabelError,
    StrongLabels,
    check_events,
    read_dcase_strong,
    read_dcase_weak,
    read_durations,
    read_polyphony_events,
    read_unlabelled,
    read_urbansed_folder,
    write_strong_tsv,
)

__all__ = [
    "DcaseSource",
    "StrongDataset",
    "dcase_dataset",
    "urbansed_dataset",
    "write_strong_dataset",
    "add_polyphony_strong_labels",
    "read_detection_split",
    "strong_path",
]

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
KINDS = ("strong", "weak", "unlabelled")


def strong_path(folder: PathLike, split: str) -> Path:
    return Path(folder) / f"{split}_strong.tsv"


@dataclass(frozen=True)
class DcaseSource:
    """One DCASE metadata file: ``kind`` (strong, weak, unlabelled), its TSV, the folder of its audio,
    and optionally a durations TSV (``filename duration``) instead of reading audio headers."""

    kind: str
    tsv: Path
    audio_dir: Path
    durations: Optional[Path] = None


@dataclass
class StrongDataset:
    """What a converter found: clip-level labels for the writer, and the strong labels per split."""

    labelled: LabelledSplits
    strong: Dict[str, StrongLabels] = field(default_factory=dict)


def _merge(into: StrongLabels, other: StrongLabels, where: str) -> None:
    for clips in (other.events, other.weak, dict.fromkeys(other.unlabelled)):
        for clip in clips:
            if clip in into.events or clip in into.weak or clip in into.unlabelled:
                raise StrongLabelError(f"{where}: clip {clip!r} is listed in two metadata files of the same split")
    into.events.update(other.events)
    into.weak.update(other.weak)
    into.unlabelled.extend(other.unlabelled)
    into.durations.update(other.durations)


def _read_source(source: DcaseSource) -> StrongLabels:
    if source.kind not in KINDS:
        raise StrongLabelError(f"{source.tsv}: kind must be one of {KINDS}, got {source.kind!r}")
    reader = {"strong": read_dcase_strong, "weak": read_dcase_weak, "unlabelled": read_unlabelled}[source.kind]
    labels = reader(source.tsv)
    if source.durations is not None:
        labels.durations.update(read_durations(source.durations))
    return labels


def _audio_files(folder: Path) -> Dict[str, str]:
    """{clip id: file name} of the audio files directly in ``folder``."""
    if not folder.is_dir():
        raise StrongLabelError(f"{folder}: audio folder not found")
    return {clip_id(name): name for name in sorted(os.listdir(folder)) if not name.startswith(".")}


def _read_durations(paths: Mapping[str, Path], known: Mapping[str, float]) -> Dict[str, float]:
    """Seconds of each clip from its audio header (clips whose header cannot be read are left out)."""
    out = dict(known)
    for clip, path in paths.items():
        if clip not in out:
            header = probe_header(str(path))
            if not isinstance(header, str):
                out[clip] = header.seconds
    return out


def dcase_dataset(
    sources: Mapping[str, Sequence[DcaseSource]],
    descriptors: Optional[Sequence[Label]] = None,
    name: str = "DCASE",
) -> StrongDataset:
    """DCASE/DESED metadata, several files per split (e.g. train = synthetic strong + weak + unlabelled).

    Clips are matched to audio files in each source's ``audio_dir`` by file name without extension;
    a listed clip without a file is an error naming the TSV. ``descriptors`` fixes the class order
    (default: the labels found, sorted).
    """
    dirs = sorted({Path(s.audio_dir).resolve() for srcs in sources.values() for s in srcs})
    root = Path(os.path.commonpath([str(d) for d in dirs])) if dirs else Path(".")
    splits: Dict[str, List[LabelledClip]] = {}
    strong: Dict[str, StrongLabels] = {}
    for split, split_sources in sources.items():
        merged, paths = StrongLabels(), {}
        for source in split_sources:
            labels = _read_source(source)
            audio_dir = Path(source.audio_dir).resolve()
            files = _audio_files(audio_dir)
            clips = list(labels.events) + list(labels.weak) + list(labels.unlabelled)
            missing = [c for c in clips if c not in files]
            if missing:
                raise StrongLabelError(
                    f"{source.tsv}: {len(missing)} listed clips have no audio file in {audio_dir} (first: {missing[0]!r})"
                )
            _merge(merged, labels, str(source.tsv))
            paths.update({c: audio_dir / files[c] for c in clips})
        strong[split] = merged
        splits[split] = [
            LabelledClip(os.path.relpath(paths[c], root).replace(os.sep, "/"), c, merged.clip_labels(c)) for c in sorted(paths)
        ]
        merged.durations = _read_durations({c: paths[c] for c in merged.events}, merged.durations)
    found = sorted({lab for s in strong.values() for lab in s.labels()})
    descriptors = list(descriptors) if descriptors is not None else [Label(i, lab, lab.replace("_", " ")) for i, lab in enumerate(found)]
    known = [d.id for d in descriptors]
    for split in strong:
        strong[split] = check_events(strong[split], known)
    return StrongDataset(LabelledSplits(name=name, root=root, descriptors=descriptors, splits=splits), strong)


def urbansed_dataset(root: PathLike) -> StrongDataset:
    """URBAN-SED (``annotations/{split}/*.txt`` and ``audio/{split}/``) with its strong labels."""
    from ..data.converters.urbansed import urbansed

    labelled = urbansed(root)
    strong = {}
    for split, clips in labelled.splits.items():
        events = read_urbansed_folder(Path(root) / "annotations" / split)
        audio = {c.clip_id: labelled.root / c.path for c in clips}
        events.durations = _read_durations(audio, {})
        strong[split] = check_events(events, [d.id for d in labelled.descriptors])
    return StrongDataset(labelled, strong)


def write_strong_dataset(
    dataset: StrongDataset, dest: PathLike, jobs: int = 1, force: bool = False, show_progress: bool = False
) -> Dict[str, object]:
    """Write the labelled folder (``sslam-prepare-labels``' writer) and each split's ``{split}_strong.tsv``.

    Strong clips whose audio was rejected (unreadable) are left out of ``{split}_strong.tsv`` as
    they are of the manifest.
    """
    from ..data.converters.writer import write_label_manifests
    from ..data.scan import check_can_write

    dest = Path(dest)
    check_can_write([strong_path(dest, split) for split in dataset.strong], force)
    reports = write_label_manifests({"": dataset.labelled}, dest, jobs=jobs, force=force, show_progress=show_progress)
    for split, labels in dataset.strong.items():
        kept = {clip_id(rel) for rel in read_manifest(dest / f"{split}.tsv").files}
        write_strong_tsv(strong_path(dest, split), {c: e for c, e in labels.events.items() if c in kept})
    return reports


def add_polyphony_strong_labels(folder: PathLike, force: bool = False) -> List[Path]:
    """Write ``{split}_strong.tsv`` beside every ``{split}_events.tsv`` of a ``sslam-make-polyphonic`` folder."""
    from ..data.scan import check_can_write

    folder = Path(folder)
    events_files = sorted(folder.glob("*_events.tsv"))
    if not events_files:
        raise StrongLabelError(f"{folder}: no {{split}}_events.tsv (write the scenes with sslam-make-polyphonic)")
    outputs = [strong_path(folder, p.name[: -len("_events.tsv")]) for p in events_files]
    check_can_write(outputs, force)
    known = read_label_descriptors(folder / "label_descriptors.csv").ids
    for events_file, out in zip(events_files, outputs):
        split = events_file.name[: -len("_events.tsv")]
        manifest = read_manifest(folder / f"{split}.tsv")
        labels = read_polyphony_events(events_file)
        durations = {}
        for i, rel in enumerate(manifest.files):
            header = probe_header(str(manifest.full_path(i)))
            durations[clip_id(rel)] = header.seconds if not isinstance(header, str) else manifest.num_samples[i] / 16000
        write_strong_tsv(out, check_events(labels, known, durations).events)
    return outputs


def read_detection_split(folder: PathLike, split: str, labels: LabelSet) -> Dict[str, object]:
    """A split of a detection data folder, clip by clip in manifest order.

    Returns {"manifest", "kinds" (strong / weak / unlabelled per clip), "events" (per clip, strong
    clips only), "weak" (label ids per clip)}. Events are checked against ``labels``.
    """
    folder = Path(folder)
    manifest = read_manifest(folder / f"{split}.tsv")
    strong_file = strong_path(folder, split)
    if not strong_file.is_file():
        raise FileNotFoundError(
            f"{strong_file}: strong labels not found; a detection data folder needs {split}_strong.tsv "
            "(sslam-prepare-labels writes it; docs/sed.md)"
        )
    strong = check_events(read_dcase_strong(strong_file), labels.ids)
    lbl = folder / f"{split}.lbl"
    weak_by_clip = read_clip_labels(lbl, labels) if lbl.is_file() else {}
    ids = [clip_id(rel) for rel in manifest.files]
    unknown = sorted(set(strong.events) - set(ids))
    if unknown:
        raise StrongLabelError(f"{strong_file}: {len(unknown)} clips are not in {split}.tsv (first: {unknown[0]!r})")
    # a clip missing from the .lbl has no clip-level labels (strong clips need none)
    weak_lists = [weak_by_clip.get(os.path.splitext(rel)[0], weak_by_clip.get(cid, [])) for rel, cid in zip(manifest.files, ids)]
    kinds, events, weak = [], [], []
    for cid, weak_indices in zip(ids, weak_lists):
        if cid in strong.events:
            kinds.append("strong")
        else:
            kinds.append("weak" if weak_indices else "unlabelled")
        events.append(strong.events.get(cid, []))
        weak.append([labels.ids[i] for i in weak_indices])
    return {"manifest": manifest, "clip_ids": ids, "kinds": kinds, "events": events, "weak": weak}
