"""Checking a manifest ahead of a long run.

Errors (clips training would have to replace, or files that do not fit
together): missing, empty, unreadable or zero-length clips (packed clips,
:mod:`sslam_plugin.data.packed_audio`: a missing archive, a damaged member), clips shorter than
one 25 ms analysis window, NaN/Inf samples or decoding failures (with
``decode=True``), and, when ``{split}.lbl`` / ``label_descriptors.csv`` /
``{split}_weights.csv`` lie beside the manifest, clips without a label line,
unknown labels or a weight count that does not match.

Warnings: a header whose length differs from the manifest's count (the file
changed since the manifest was written); with ``min_samples``, a clip shorter
than that many samples at 16 kHz, which pre-training leaves out
(``task.min_sample_size``, compared after resampling, the same for every rate).
The rates read are kept in ``{split}.rates`` for the training's length filter
(:mod:`sslam_plugin.data.manifest`). Sample rates and channel counts are
tallied in the summary: training resamples to 16 kHz and averages channels,
so a mixture is not an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..features import SAMPLE_RATE
from .audio import EMPTY_FILE, NOT_FOUND, AudioLoadError, load_audio
from .labels import clip_label_key, read_label_descriptors
from .manifest import Manifest, read_manifest, read_sample_rates, samples_at_16k, write_sample_rates
from .parallel import parallel_map
from .scan import AudioHeader, probe_header, reason_category

__all__ = ["ClipProblem", "ValidationReport", "check_clip", "validate_manifest"]

MIN_SECONDS = 0.025  # one analysis window of the fbank front end


@dataclass(frozen=True)
class ClipProblem:
    """``line``: manifest line number (0 for a problem of a side file)."""

    line: int
    path: str
    severity: str  # "error" or "warning"
    reason: str


@dataclass
class ValidationReport:
    manifest: Path
    root: Path
    clips: int = 0
    checked: int = 0
    seconds: float = 0.0
    problems: List[ClipProblem] = field(default_factory=list)
    sample_rates: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)

    @property
    def errors(self) -> List[ClipProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> List[ClipProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    def summary(self) -> str:
        rates = ", ".join(f"{r} Hz x{n}" for r, n in self.sample_rates.most_common())
        chans = ", ".join(f"{c} ch x{n}" for c, n in self.channels.most_common())
        kinds = Counter(reason_category(p.reason) for p in self.errors)
        line = (
            f"{self.manifest}: checked {self.checked} of {self.clips} clips ({self.seconds / 3600:.2f} h); "
            f"{len(self.errors)} errors"
        )
        if kinds:
            line += " (" + ", ".join(f"{k} {n}" for k, n in kinds.most_common()) + ")"
        line += f", {len(self.warnings)} warnings; sample rates: {rates or '-'}; channels: {chans or '-'}"
        if len(self.sample_rates) > 1 or len(self.channels) > 1 or any(r != SAMPLE_RATE for r in self.sample_rates):
            line += " (resampled to 16 kHz and averaged to mono when loaded)"
        return line


def check_clip(args: Tuple[str, int, bool, int]) -> Tuple[Optional[AudioHeader], List[Tuple[str, str]]]:
    """Check one clip: (full path, manifest sample count, decode?, min samples at 16 kHz) -> (header, [(severity, reason)]).

    Never raises (it runs in worker processes).
    """
    path, expected, decode, min_samples = args
    header = probe_header(path)
    if isinstance(header, str):
        return None, [("error", header)]
    problems: List[Tuple[str, str]] = []
    if header.seconds < MIN_SECONDS:
        problems.append(("error", f"too short: {header.num_samples} samples, under one 25 ms analysis window"))
    elif samples_at_16k(header.num_samples, header.sample_rate) < min_samples:
        seconds = header.seconds
        problems.append((
            "warning",
            f"shorter than the minimum: {seconds:.3g} s ({samples_at_16k(header.num_samples, header.sample_rate)} "
            f"samples at 16 kHz) < task.min_sample_size={min_samples} ({min_samples / SAMPLE_RATE:.3g} s); "
            "pre-training leaves it out",
        ))
    if header.num_samples != expected:
        problems.append(
            ("warning", f"length mismatch: the manifest says {expected} samples, the header {header.num_samples}")
        )
    if decode:
        try:
            load_audio(path)
        except AudioLoadError as err:
            text = str(err)
            text = text[len(path) + 2 :] if text.startswith(f"{path}: ") else text
            if "NaN or Inf" in text:
                text = f"non-finite samples: {text}"
            elif not text.startswith((NOT_FOUND, EMPTY_FILE, "file holds no samples")):
                text = f"undecodable: {text}"
            problems.append(("error", text))
        except Exception as err:  # a worker must report, not die
            problems.append(("error", f"undecodable: {type(err).__name__}: {err}"))
    return header, problems


def _even_subset(n: int, count: Optional[int]) -> List[int]:
    if count is None or count >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))


def _check_labels(manifest: Manifest, report: ValidationReport) -> None:
    """Side files of a labelled manifest: ``{split}.lbl``, ``label_descriptors.csv``, ``{split}_weights.csv``."""
    folder, split = manifest.path.parent, manifest.path.stem
    lbl = folder / f"{split}.lbl"
    descriptors = folder / "label_descriptors.csv"
    weights = folder / f"{split}_weights.csv"
    if lbl.is_file():
        known = None
        if descriptors.is_file():
            try:
                known = set(read_label_descriptors(descriptors).ids)
            except ValueError as err:
                report.problems.append(ClipProblem(0, str(descriptors), "error", str(err)))
        labels_of = {}
        for lineno, line in enumerate(lbl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            clip, sep, labels = line.partition("\t")
            if not sep:
                report.problems.append(ClipProblem(0, str(lbl), "error", f"bad label line {lineno}: no tab in {line!r}"))
                continue
            if clip in labels_of:
                report.problems.append(ClipProblem(0, str(lbl), "error", f"duplicate clip id {clip!r} at line {lineno}"))
            labels_of[clip] = [x for x in labels.split(",") if x]
            unknown = [x for x in labels_of[clip] if known is not None and x not in known]
            if unknown:
                report.problems.append(
                    ClipProblem(0, str(lbl), "error", f"unknown labels {unknown} at line {lineno} (not in {descriptors.name})")
                )
        for i, rel in enumerate(manifest.files):
            if clip_label_key(rel, labels_of, manifest.root) is None:
                report.problems.append(ClipProblem(i + 2, rel, "error", f"no label line in {lbl.name}"))
    if weights.is_file():
        count = sum(1 for line in weights.read_text(encoding="utf-8").splitlines() if line.strip())
        if count != len(manifest):
            report.problems.append(
                ClipProblem(0, str(weights), "error", f"{count} weights for {len(manifest)} clips in {manifest.path.name}")
            )


def validate_manifest(
    path: Union[str, Path],
    decode: bool = False,
    jobs: int = 1,
    max_clips: Optional[int] = None,
    show_progress: bool = False,
    min_samples: int = 0,
) -> ValidationReport:
    """Check every clip of a manifest (or ``max_clips`` spread evenly over it).

    ``decode=True`` also decodes each clip (finds NaN/Inf and corrupt data
    past the header; slower). ``min_samples``: warn about clips shorter than
    this many samples at 16 kHz (pre-training's ``task.min_sample_size``).
    Raises ManifestError for an unreadable manifest.
    """
    manifest = read_manifest(path)
    report = ValidationReport(manifest=manifest.path, root=manifest.root, clips=len(manifest))
    if not manifest.root.is_dir():
        report.problems.append(ClipProblem(1, str(manifest.root), "error", "missing: the audio root does not exist"))
        return report
    indices = _even_subset(len(manifest), max_clips)
    tasks: Sequence[Tuple[str, int, bool, int]] = [
        (str(manifest.full_path(i)), manifest.num_samples[i], decode, min_samples) for i in indices
    ]
    results = parallel_map(check_clip, tasks, jobs=jobs, desc="checking clips", show_progress=show_progress)
    for i, (header, problems) in zip(indices, results):
        report.checked += 1
        if header is not None:
            report.sample_rates[header.sample_rate] += 1
            report.channels[header.channels] += 1
            report.seconds += header.seconds
        for severity, reason in problems:
            report.problems.append(ClipProblem(i + 2, manifest.files[i], severity, reason))
    _check_labels(manifest, report)
    _keep_sample_rates(manifest, indices, results)
    return report


def _keep_sample_rates(manifest: Manifest, indices: Sequence[int], results: Sequence[Tuple[Optional[AudioHeader], list]]) -> None:
    """Add the rates just read to ``{split}.rates``, so that training's length filter need not read them again."""
    rates = read_sample_rates(manifest.path)
    before = dict(rates)
    for i, (header, _) in zip(indices, results):
        if header is not None:
            rates[(manifest.files[i], manifest.num_samples[i])] = header.sample_rate
    if rates != before:
        write_sample_rates(manifest.path, [(rel, n, rate) for (rel, n), rate in rates.items()])
