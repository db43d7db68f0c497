"""Scanning an audio folder into fairseq manifests, reading headers only.

The output is the format of fairseq's ``wav2vec_manifest.py``: the first line
is the absolute audio root, every further line ``relative/path<TAB>num_samples``
(frames at the file's own sample rate). What differs:

* only headers are read (no decoding), in parallel, with a progress bar;
* a file that is missing (a broken link), empty (0 bytes), unreadable or holds
  no samples, or falls outside the duration limits, is left out and listed in
  ``rejected.tsv`` (same layout, the second column the reason);
* the train/valid split is a pure function of ``(seed, relative path)``: the
  output does not depend on the number of jobs or on the order the file system
  lists files, and a clip keeps its split when more files are added later;
* lines are sorted by path, and existing manifests are never overwritten
  unless asked to.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import soundfile as sf

from .packed_audio import PackedReadError, packed_header, parse_entry
from ..progress import progress_bar
from .parallel import parallel_map_chunks

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioHeader",
    "ManifestReport",
    "REJECT_MISSING",
    "REJECT_EMPTY",
    "REJECT_UNREADABLE",
    "REJECT_NO_SAMPLES",
    "REJECT_TOO_SHORT",
    "REJECT_TOO_LONG",
    "find_audio_files",
    "probe_header",
    "scan_headers",
    "is_valid_clip",
    "write_lines",
    "write_manifest",
    "write_rejected",
    "check_can_write",
    "reason_category",
    "prepare_manifest",
]

logger = logging.getLogger(__name__)

# what soundfile (libsndfile >= 1.1) reads; oga and opus are Ogg files under their usual names
AUDIO_EXTENSIONS: Tuple[str, ...] = ("wav", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff")

# Rejection categories: a reason is "<category>" or "<category>: <detail>".
REJECT_MISSING = "missing"
REJECT_EMPTY = "empty file"
REJECT_UNREADABLE = "unreadable"
REJECT_NO_SAMPLES = "no samples"
REJECT_TOO_SHORT = "too short"
REJECT_TOO_LONG = "too long"

PathLike = Union[str, Path]


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header says."""

    num_samples: int  # per channel (soundfile calls them frames; here a frame is a 10 ms fbank frame)
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


HeaderOrReason = Union[AudioHeader, str]


def probe_header(path: str) -> HeaderOrReason:
    """Read one file's header (or a packed clip's: ``archive.zip:OFFSET:LENGTH``, ``part.h5/CLIP_ID``); never raises.

    Returns:
        an :class:`AudioHeader`, or the rejection reason as a string
        (``"missing"``, ``"empty file (0 bytes)"``, ``"unreadable: ..."``,
        ``"no samples: ..."``).
    """
    entry = parse_entry(path)  # a clip packed in a zip or HDF5 archive (sslam_plugin.data.packed_audio)
    if entry is not None:
        try:
            header = AudioHeader(*packed_header(entry))
        except PackedReadError as err:
            reason = str(err)
            if reason.startswith("file not found"):
                return f"{REJECT_MISSING}: {reason}"
            return f"{REJECT_EMPTY} (0 bytes)" if reason.startswith(REJECT_EMPTY) else f"{REJECT_UNREADABLE}: {reason}"
        except Exception as err:  # e.g. an HDF5 library error: reported, never raised
            return f"{REJECT_UNREADABLE}: {type(err).__name__}: {' '.join(str(err).split())}"
    else:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return REJECT_MISSING
        except OSError as err:
            return f"{REJECT_UNREADABLE}: cannot stat ({err.strerror})"
        if size == 0:
            return f"{REJECT_EMPTY} (0 bytes)"
        try:
            with sf.SoundFile(path) as handle:
                header = AudioHeader(int(handle.frames), int(handle.samplerate), int(handle.channels))
        except Exception as err:  # libsndfile reports bad files through several exception types
            detail = getattr(err, "error_string", None) or str(err).replace(f"'{path}'", "").replace(str(path), "")
            return f"{REJECT_UNREADABLE}: {' '.join(detail.split()).strip(' :') or type(err).__name__}"
    if header.num_samples <= 0:
        return f"{REJECT_NO_SAMPLES}: header says 0 frames"
    if header.sample_rate <= 0 or header.channels <= 0:
        return f"{REJECT_UNREADABLE}: invalid header ({header.sample_rate} Hz, {header.channels} channels)"
    return header


def find_audio_files(
    root: PathLike,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    path_must_contain: Optional[str] = None,
    show_progress: bool = False,
) -> List[str]:
    """Every file under ``root`` with one of ``extensions`` (case-insensitive), recursively.

    Symbolic links are followed, each folder visited once (link loops are safe);
    folders that cannot be listed are logged and skipped. ``show_progress``: a
    bar counting the files found (on a terminal).

    Returns:
        sorted paths relative to ``root``, with ``/`` separators.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: audio folder not found")
    suffixes = tuple("." + ext.lower().lstrip(".") for ext in extensions)
    if not suffixes:
        raise ValueError("no audio extensions given")
    found: List[str] = []
    skipped: Dict[str, int] = {}  # other files, by extension: said once, so none is left behind unnoticed
    seen = set()
    stack = [""]
    bar = progress_bar(None, "finding files", unit=" files", enabled=show_progress)
    while stack:
        rel_dir = stack.pop()
        full = os.path.join(root, rel_dir)
        try:
            info = os.stat(full)
            entries = list(os.scandir(full))
        except OSError as err:
            logger.warning("cannot list %s (%s); skipped", full, err.strerror)
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        before = len(found)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(rel)
            elif entry.name.lower().endswith(suffixes):
                found.append(rel)
            else:
                ext = os.path.splitext(entry.name)[1].lower() or "(none)"
                skipped[ext] = skipped.get(ext, 0) + 1
        bar.update(len(found) - before)
    bar.close()
    if skipped:
        listed = ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items(), key=lambda item: -item[1]))
        logger.info(
            "%s: %d other files skipped (%s); to include them, add their extensions (--ext)",
            root, sum(skipped.values()), listed,
        )
    if path_must_contain:
        found = [rel for rel in found if path_must_contain in rel]
    found.sort()
    return found


def scan_headers(
    root: PathLike, rel_paths: Sequence[str], jobs: int = 1, show_progress: bool = False
) -> List[HeaderOrReason]:
    """:func:`probe_header` of ``root / p`` for every path, in order, over ``jobs`` processes (chunks of paths)."""
    results = _scan(root, rel_paths, jobs, show_progress, 0, 0.0)
    return [result if isinstance(result, str) else AudioHeader(*result[:3]) for result in results]


ScanResult = Union[Tuple[int, int, int, bool], str]  # (num_samples, sample_rate, channels, in valid split) or reason


def _scan(root: PathLike, rel_paths: Sequence[str], jobs: int, show_progress: bool, seed: int, valid_fraction: float):
    probe = partial(_probe_chunk, str(root), seed, valid_fraction)
    return parallel_map_chunks(probe, rel_paths, jobs=jobs, desc="reading headers", show_progress=show_progress)


def _probe_chunk(root: str, seed: int, valid_fraction: float, rel_paths: Sequence[str]) -> List[ScanResult]:
    """In a worker: each file's header and split (:func:`is_valid_clip`) as a plain tuple, or its rejection reason.

    Plain tuples, and the split's hash done here: the parent's cost per file is a share of one message.
    """
    out: List[ScanResult] = []
    for rel in rel_paths:
        header = probe_header(os.path.join(root, rel))
        if isinstance(header, str):
            out.append(header)
        else:
            valid = is_valid_clip(rel, seed, valid_fraction)
            out.append((header.num_samples, header.sample_rate, header.channels, valid))
    return out


def is_valid_clip(rel_path: str, seed: int, valid_fraction: float) -> bool:
    """Whether a clip belongs to the validation split.

    A pure function of (seed, path): a uniform number in [0, 1) from a hash of
    both, compared with ``valid_fraction``. The split is the same on every
    machine and for any number of jobs, and a clip keeps it as files are added.
    """
    if valid_fraction <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}\0{rel_path}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < valid_fraction


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (newline-terminated) to a temporary file, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    lines = iter(lines)
    with tmp.open("w", encoding="utf-8", newline="\n") as handle:
        while batch := list(islice(lines, 8192)):  # one write per batch: a million lines in a fraction of a second
            handle.write("\n".join(batch) + "\n")
    os.replace(tmp, path)


def _check_field(value: str, what: str) -> str:
    if "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} {value!r} contains a tab or line break, which the manifest format cannot hold")
    return value


def write_manifest(path: PathLike, root: PathLike, entries: Iterable[Tuple[str, int]]) -> int:
    """Write a fairseq manifest: ``root`` then ``rel<TAB>num_samples`` lines; returns the clip count."""
    count = 0

    def lines():
        nonlocal count
        yield str(root)
        for rel, frames in entries:
            count += 1
            yield f"{_check_field(rel, 'path')}\t{int(frames)}"

    write_lines(Path(path), lines())
    return count


def write_rejected(path: PathLike, root: PathLike, rejected: Iterable[Tuple[str, str]]) -> None:
    """Write ``rejected.tsv``: ``root`` then ``rel<TAB>reason`` lines."""
    write_lines(
        Path(path),
        [str(root)] + [f"{_check_field(rel, 'path')}\t{' '.join(reason.split())}" for rel, reason in rejected],
    )


def check_can_write(paths: Sequence[Path], force: bool) -> None:
    """Refuse to overwrite any of ``paths`` unless ``force``; names the files and the fix."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --force to overwrite, or choose another --dest"
        )


def reason_category(reason: str) -> str:
    """``"unreadable: Format not recognised"`` -> ``"unreadable"``."""
    return reason.split(":", 1)[0].split(" (", 1)[0]


@dataclass
class ManifestReport:
    """What :func:`prepare_manifest` did."""

    root: Path
    dest: Path
    found: int = 0
    split_counts: Dict[str, int] = field(default_factory=dict)
    split_hours: Dict[str, float] = field(default_factory=dict)
    rejected: Dict[str, int] = field(default_factory=dict)  # category -> count

    @property
    def kept(self) -> int:
        return sum(self.split_counts.values())

    def summary(self) -> str:
        splits = ", ".join(
            f"{name} {count} ({self.split_hours.get(name, 0.0):.1f} h)" for name, count in self.split_counts.items()
        )
        rejected = sum(self.rejected.values())
        line = f"{self.found} audio files under {self.root}: kept {self.kept} ({splits}), rejected {rejected}"
        if rejected:
            details = ", ".join(f"{cat} {n}" for cat, n in sorted(self.rejected.items()))
            line += f" ({details}; listed in {self.dest / 'rejected.tsv'})"
        return line


def prepare_manifest(
    audio_dir: PathLike,
    dest: PathLike,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    valid_fraction: float = 0.01,
    seed: int = 42,
    jobs: int = 1,
    min_seconds: Optional[float] = None,
    max_seconds: Optional[float] = None,
    path_must_contain: Optional[str] = None,
    force: bool = False,
    show_progress: bool = False,
) -> ManifestReport:
    """Scan ``audio_dir`` and write ``dest/train.tsv``, ``dest/valid.tsv`` and ``dest/rejected.tsv``.

    ``valid.tsv`` is written only when ``valid_fraction > 0``. Clips shorter than
    ``min_seconds`` or longer than ``max_seconds`` are rejected like broken files.
    Raises FileExistsError when an output exists and ``force`` is false.
    """
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(
            f"valid fraction must be in [0, 1] (as in fairseq's wav2vec_manifest.py, 0.01 = 1 %), got {valid_fraction}"
        )
    if min_seconds is not None and max_seconds is not None and min_seconds > max_seconds:
        raise ValueError(f"min seconds ({min_seconds}) is larger than max seconds ({max_seconds})")
    root = Path(os.path.realpath(audio_dir))
    dest = Path(dest)
    outputs = [dest / "train.tsv", dest / "rejected.tsv"]
    if valid_fraction > 0:
        outputs.insert(1, dest / "valid.tsv")
    check_can_write(outputs, force)

    rel_paths = find_audio_files(root, extensions, path_must_contain, show_progress=show_progress)
    logger.info("found %d files with extensions %s under %s", len(rel_paths), ",".join(extensions), root)
    headers = _scan(root, rel_paths, jobs, show_progress, seed, valid_fraction)

    splits: Dict[str, List[Tuple[str, int]]] = {"train": []}
    if valid_fraction > 0:
        splits["valid"] = []
    hours: Counter = Counter()
    rejected: List[Tuple[str, str]] = []
    for rel, header in zip(rel_paths, headers):
        if isinstance(header, str):
            rejected.append((rel, header))
            continue
        num_samples, sample_rate, _, valid = header
        seconds = num_samples / sample_rate
        if min_seconds is not None and seconds < min_seconds:
            rejected.append((rel, f"{REJECT_TOO_SHORT}: {seconds:.3f} s < --min-seconds {min_seconds:g}"))
            continue
        if max_seconds is not None and seconds > max_seconds:
            rejected.append((rel, f"{REJECT_TOO_LONG}: {seconds:.3f} s > --max-seconds {max_seconds:g}"))
            continue
        split = "valid" if valid else "train"
        splits[split].append((rel, num_samples))
        hours[split] += seconds / 3600.0

    dest.mkdir(parents=True, exist_ok=True)
    for name, entries in splits.items():
        write_manifest(dest / f"{name}.tsv", root, entries)
    write_rejected(dest / "rejected.tsv", root, rejected)
    report = ManifestReport(
        root=root,
        dest=dest,
        found=len(rel_paths),
        split_counts={name: len(entries) for name, entries in splits.items()},
        split_hours={name: hours[name] for name in splits},
        rejected=dict(Counter(reason_category(reason) for _, reason in rejected)),
    )
    if not splits["train"]:
        logger.warning("%s: no usable clips were found; train.tsv lists none", root)
    elif valid_fraction > 0 and not splits["valid"]:
        logger.warning("valid.tsv is empty: %d clips are too few for a %.3g valid fraction", report.kept, valid_fraction)
    logger.info("%s", report.summary())
    return report
