"""fairseq audio manifests: a root folder line, then ``relative/path<TAB>num_samples``.

``num_samples`` counts samples at each file's own rate. The short-clip filter
(:func:`read_manifest` with ``min_samples``) compares lengths as the model sees
them, in samples at 16 kHz, the same for every rate: a clip of ``n`` samples
at rate ``r`` lasts ``ceil(n * 16000 / r)`` samples after resampling. The
manifest does not hold the rates (fairseq's format has two columns); they are
read from the clips' headers once and kept beside the manifest in
``{split}.rates`` (``relative/path<TAB>num_samples<TAB>rate``; an entry whose
count no longer matches the manifest is read again). ``sslam-validate-manifest``
writes that file too, so a checked manifest costs nothing more to filter.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "Manifest",
    "ManifestError",
    "ShortClip",
    "read_manifest",
    "read_sample_rates",
    "rates_path",
    "samples_at_16k",
    "write_sample_rates",
    "write_short_clips",
]

logger = logging.getLogger(__name__)

MODEL_RATE = 16000  # the rate of the front end (sslam_plugin.features.SAMPLE_RATE; no torch import here)
SHOWN_SHORT_CLIPS = 5  # short clips named in the log line; the rest are in the file


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ShortClip:
    """A clip the length filter left out: its manifest path, samples at its own rate, that rate (0: unknown)."""

    path: str
    num_samples: int
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.num_samples / (self.sample_rate or MODEL_RATE)


@dataclass
class Manifest:
    """The clips of one split.

    ``root`` is absolute: a relative root line resolves against the manifest's folder.
    ``dropped``: clips the length filter left out (:func:`read_manifest`), in manifest order.
    """

    path: Path
    root: Path
    files: List[str] = field(default_factory=list)
    num_samples: List[int] = field(default_factory=list)
    dropped: List[ShortClip] = field(default_factory=list)
    min_samples: int = 0

    def __len__(self) -> int:
        return len(self.files)

    def full_path(self, index: int) -> Path:
        return self.root / self.files[index]


def samples_at_16k(num_samples: int, sample_rate: int) -> int:
    """Samples of a clip after resampling to 16 kHz (the resampler's output length); rate 0 (unknown): as given."""
    if sample_rate <= 0 or sample_rate == MODEL_RATE:
        return num_samples
    return -(-num_samples * MODEL_RATE // sample_rate)


def rates_path(manifest_path: Union[str, Path]) -> Path:
    """``{split}.rates`` beside ``{split}.tsv``."""
    path = Path(manifest_path)
    return path.with_name(path.stem + ".rates")


def read_sample_rates(manifest_path: Union[str, Path]) -> Dict[Tuple[str, int], int]:
    """(relative path, num_samples) -> sample rate from ``{split}.rates``; empty when absent or unreadable."""
    rates: Dict[Tuple[str, int], int] = {}
    try:
        text = rates_path(manifest_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return rates
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            rates[(parts[0], int(parts[1]))] = int(parts[2])
    return rates


def write_sample_rates(manifest_path: Union[str, Path], entries: Sequence[Tuple[str, int, int]]) -> Optional[Path]:
    """Write ``{split}.rates`` (path, num_samples, rate per line); None, logged, when the folder is read-only."""
    target = rates_path(manifest_path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # several ranks may write it at once
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for rel, count, rate in entries:
                handle.write(f"{rel}\t{count}\t{rate}\n")
        os.replace(tmp, target)
    except OSError as err:
        logger.info("could not keep the sample rates in %s (%s); they are read from the headers each time", target, err)
        try:
            tmp.unlink()
        except OSError:
            pass
        return None
    return target


def _sample_rates(manifest: Manifest, counts: List[int], jobs: Optional[int]) -> List[int]:
    """Each clip's rate (0: header unreadable), from ``{split}.rates`` or, for clips it lacks, the headers."""
    from .parallel import default_jobs, parallel_map  # headers are read only when a filter needs them
    from .scan import probe_header

    known = read_sample_rates(manifest.path)
    rates = [known.get((rel, n), -1) for rel, n in zip(manifest.files, counts)]
    missing = [i for i, rate in enumerate(rates) if rate < 0]
    if not missing:
        return rates
    logger.info("%s: reading the sample rates of %d clips from their headers", manifest.path, len(missing))
    workers = jobs if jobs is not None else min(8, default_jobs())
    headers = parallel_map(probe_header, [str(manifest.full_path(i)) for i in missing], jobs=workers)
    for i, header in zip(missing, headers):
        rates[i] = 0 if isinstance(header, str) else header.sample_rate
    if all(rate == 0 for rate in rates):  # a missing root: nothing worth keeping
        return rates
    known.update(((rel, n), rate) for rel, n, rate in zip(manifest.files, counts, rates))
    write_sample_rates(manifest.path, [(rel, n, rate) for (rel, n), rate in known.items()])
    return rates


def read_manifest(path: Union[str, Path], min_samples: int = 0, jobs: Optional[int] = None) -> Manifest:
    """Parse a manifest, keeping clips of at least ``min_samples`` samples at 16 kHz.

    ``min_samples`` is counted as the model sees clips, after resampling to
    16 kHz (see the module docstring); a clip whose header cannot be read is
    judged by its count as given (the reader replaces it anyway). Left-out clips
    are in ``Manifest.dropped`` and one log line counts them and names a few.
    ``jobs``: processes reading headers for the filter (default: up to 8).

    Raises :class:`ManifestError` naming the file and line for a missing file,
    an empty manifest, or a line that is not ``path<TAB>integer``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with path.open("r", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(f"{path}: empty manifest; the first line must be the audio root folder")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    manifest = Manifest(path=path, root=root, min_samples=max(0, min_samples))
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ManifestError(
                f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r}"
            )
        rel, count = parts
        try:
            n = int(count)
        except ValueError:
            raise ManifestError(
                f"{path}:{lineno}: sample count {count!r} is not an integer"
            ) from None
        if n < 0:
            raise ManifestError(f"{path}:{lineno}: negative sample count {n}")
        manifest.files.append(rel)
        manifest.num_samples.append(n)
    if min_samples > 0 and manifest.files:
        _drop_short_clips(manifest, min_samples, jobs)
    return manifest


def _drop_short_clips(manifest: Manifest, min_samples: int, jobs: Optional[int]) -> None:
    files, counts = manifest.files, manifest.num_samples
    # a clip this long is long enough at any rate up to 768 kHz; only the others need their rate
    unsure = [i for i, n in enumerate(counts) if n < min_samples * 48]
    rates = [MODEL_RATE] * len(files)
    if unsure:
        subset = Manifest(path=manifest.path, root=manifest.root, files=[files[i] for i in unsure])
        for i, rate in zip(unsure, _sample_rates(subset, [counts[i] for i in unsure], jobs)):
            rates[i] = rate
    keep = [samples_at_16k(n, rate) >= min_samples for n, rate in zip(counts, rates)]
    manifest.dropped = [ShortClip(f, n, r) for f, n, r, k in zip(files, counts, rates, keep) if not k]
    manifest.files = [f for f, k in zip(files, keep) if k]
    manifest.num_samples = [n for n, k in zip(counts, keep) if k]
    if manifest.dropped:
        shown = ", ".join(f"{c.path} ({c.seconds:.3g} s)" for c in manifest.dropped[:SHOWN_SHORT_CLIPS])
        more = len(manifest.dropped) - SHOWN_SHORT_CLIPS
        logger.warning(
            "%s: left out %d of %d clips shorter than %d samples at 16 kHz (%.3g s; task.min_sample_size): %s%s",
            manifest.path, len(manifest.dropped), len(files), min_samples, min_samples / MODEL_RATE, shown,
            f" and {more} more" if more > 0 else "",
        )


def write_short_clips(manifest: Manifest, folder: Union[str, Path], split: str) -> Optional[Path]:
    """List the clips the length filter left out in ``folder/short_clips_{split}.tsv``; None when there are none.

    Layout: the audio root, then ``relative/path<TAB>seconds<TAB>sample_rate`` (rate 0: header unreadable).
    """
    if not manifest.dropped:
        return None
    target = Path(folder) / f"short_clips_{split}.tsv"
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(manifest.root)] + [f"{c.path}\t{c.seconds:.4f}\t{c.sample_rate}" for c in manifest.dropped]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target
