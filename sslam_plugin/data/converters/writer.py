"""The one writer of labelled manifests: headers read once, in parallel, for every converter."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from ..labels import Label, read_label_descriptors
from ..parallel import parallel_map
from ..scan import AudioHeader, check_can_write, probe_header, reason_category, write_lines, write_manifest, write_rejected
from .records import LabelFormatError, LabelledClip, LabelledSplits, LabelReport, PathLike, check_label

__all__ = [
    "read_descriptor_rows",
    "write_label_descriptors",
    "write_labels",
    "sampling_weights",
    "write_sampling_weights",
    "write_label_manifests",
]

logger = logging.getLogger(__name__)


def read_descriptor_rows(path: PathLike) -> List[Label]:
    """Read ``index,label_id,display_name`` rows (our ``label_descriptors.csv`` or AudioSet's
    ``class_labels_indices.csv``, whose header row is skipped)."""
    try:
        labels = read_label_descriptors(path)
    except (FileNotFoundError, ValueError) as err:
        raise LabelFormatError(str(err)) from err
    for label_id in labels.ids:
        check_label(label_id, f"{path}: label id")
    return list(labels)


def write_label_descriptors(path: PathLike, descriptors: Sequence[Label]) -> None:
    """``index,label_id,display_name`` rows, no header (display names quoted when they hold commas)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for d in sorted(descriptors, key=lambda d: d.index):
        writer.writerow([d.index, d.id, d.name])
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
            write_manifest(out / f"{split}.tsv", root, ((c.path, h.num_samples) for c, h in kept))
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
