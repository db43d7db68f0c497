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

The clips are held as packed arrays (:mod:`.row_tables`), not one Python
object per row, so forked DataLoader workers share them instead of copying
them page by page; a two-million-line manifest parses in about a second
(:mod:`.tsv_columns`). A path is taken as written: packed entries such as
``archive.zip:offset:length`` or ``part.h5/clip_id`` pass unchanged.
"""

from __future__ import annotations

import codecs
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .row_tables import StringTable, match_rows
from .tsv_columns import has_odd_line_breaks, parse_name_int_lines

__all__ = [
    "Manifest",
    "ManifestError",
    "ShortClip",
    "ShortClips",
    "read_manifest",
    "read_rate_table",
    "read_sample_rates",
    "rates_path",
    "samples_at_16k",
    "write_rate_table",
    "write_sample_rates",
    "write_short_clips",
]

logger = logging.getLogger(__name__)

MODEL_RATE = 16000  # the rate of the front end (sslam_plugin.features.SAMPLE_RATE; no torch import here)
SHOWN_SHORT_CLIPS = 5  # short clips named in the log line; the rest are in the file
MAX_RATE_FACTOR = 48  # a clip of min_samples * 48 samples is long enough at any rate up to 768 kHz


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


class ShortClips(Sequence[ShortClip]):
    """The clips the length filter left out, packed like the manifest; items are :class:`ShortClip`."""

    def __init__(self, files: Optional[StringTable] = None, num_samples=None, sample_rates=None):
        self.files = files if files is not None else StringTable()
        self.num_samples = np.zeros(0, np.int64) if num_samples is None else np.asarray(num_samples, np.int64)
        self.sample_rates = np.zeros(0, np.int64) if sample_rates is None else np.asarray(sample_rates, np.int64)

    @classmethod
    def from_clips(cls, clips: Iterable[ShortClip]) -> "ShortClips":
        clips = list(clips)
        return cls(StringTable.from_strings(c.path for c in clips), [c.num_samples for c in clips],
                   [c.sample_rate for c in clips])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, slice):
            rows = np.arange(len(self))[index]
            return ShortClips(self.files.take(rows), self.num_samples[rows], self.sample_rates[rows])
        return ShortClip(self.files[index], int(self.num_samples[index]), int(self.sample_rates[index]))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (ShortClips, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None


@dataclass
class Manifest:
    """The clips of one split.

    ``root`` is absolute: a relative root line resolves against the manifest's folder.
    ``files``: relative paths (a :class:`StringTable`: reads as a list of ``str``);
    ``num_samples``: int64 array (zeros when built without counts).
    ``dropped``: clips the length filter left out (:func:`read_manifest`), in manifest order.
    Lists given to the constructor are packed.
    """

    path: Path
    root: Path
    files: StringTable = field(default_factory=StringTable)
    num_samples: Optional[np.ndarray] = None
    dropped: ShortClips = field(default_factory=ShortClips)
    min_samples: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.files, StringTable):
            self.files = StringTable.from_strings(self.files)
        if self.num_samples is None:
            self.num_samples = np.zeros(len(self.files), np.int64)
        self.num_samples = np.asarray(self.num_samples, dtype=np.int64).reshape(-1)
        if len(self.num_samples) != len(self.files):
            raise ValueError(f"{self.path}: {len(self.files)} files but {len(self.num_samples)} sample counts")
        if not isinstance(self.dropped, ShortClips):
            self.dropped = ShortClips.from_clips(self.dropped)

    def __len__(self) -> int:
        return len(self.files)

    def full_path(self, index: int) -> Path:
        return self.root / self.files[index]


def samples_at_16k(num_samples: int, sample_rate: int) -> int:
    """Samples of a clip after resampling to 16 kHz (the resampler's output length); rate 0 (unknown): as given."""
    if sample_rate <= 0 or sample_rate == MODEL_RATE:
        return num_samples
    return -(-num_samples * MODEL_RATE // sample_rate)


def _samples_at_16k_array(num_samples: np.ndarray, sample_rates: np.ndarray) -> np.ndarray:
    """:func:`samples_at_16k` of every row at once."""
    same = (sample_rates <= 0) | (sample_rates == MODEL_RATE)
    resampled = -(-num_samples * MODEL_RATE // np.where(same, 1, sample_rates))
    return np.where(same, num_samples, resampled)


def rates_path(manifest_path: Union[str, Path]) -> Path:
    """``{split}.rates`` beside ``{split}.tsv``."""
    path = Path(manifest_path)
    return path.with_name(path.stem + ".rates")


def read_rate_table(manifest_path: Union[str, Path]) -> Tuple[StringTable, np.ndarray, np.ndarray]:
    """(relative paths, num_samples, sample rates) of ``{split}.rates``, packed; empty when absent or unreadable.

    Lines that are not ``path<TAB>count<TAB>rate`` are skipped (the file is a cache).
    """
    empty = (StringTable(), np.zeros(0, np.int64), np.zeros(0, np.int64))
    try:
        raw = rates_path(manifest_path).read_bytes()
    except OSError:
        return empty
    try:
        raw.isascii() or raw.decode("utf-8")
    except UnicodeDecodeError:
        return empty
    parsed = None if has_odd_line_breaks(raw) else parse_name_int_lines(raw, 2)
    if parsed is not None:
        names, values = parsed
        return names, values[:, 0].copy(), values[:, 1].copy()
    rows = []
    for line in raw.decode("utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            rows.append((parts[0], int(parts[1]), int(parts[2])))
    if not rows:
        return empty
    return StringTable.from_strings(r[0] for r in rows), np.array([r[1] for r in rows]), np.array([r[2] for r in rows])


def read_sample_rates(manifest_path: Union[str, Path]) -> Dict[Tuple[str, int], int]:
    """(relative path, num_samples) -> sample rate from ``{split}.rates``; empty when absent or unreadable."""
    names, counts, rates = read_rate_table(manifest_path)
    return dict(zip(zip(names, counts.tolist()), rates.tolist()))


def write_sample_rates(manifest_path: Union[str, Path], entries: Sequence[Tuple[str, int, int]]) -> Optional[Path]:
    """Write ``{split}.rates`` (path, num_samples, rate per line); None, logged, when the folder is read-only."""
    entries = list(entries)
    return write_rate_table(manifest_path, StringTable.from_strings(e[0] for e in entries),
                            np.array([e[1] for e in entries], np.int64), np.array([e[2] for e in entries], np.int64))


def write_rate_table(manifest_path: Union[str, Path], names: StringTable, counts: np.ndarray,
                     rates: np.ndarray) -> Optional[Path]:
    """:func:`write_sample_rates` from packed columns."""
    target = rates_path(manifest_path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # several ranks may write it at once
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as handle:
            for rel, count, rate in zip(names, np.asarray(counts).tolist(), np.asarray(rates).tolist()):
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


def _sample_rates(manifest: Manifest, rows: np.ndarray, jobs: Optional[int]) -> np.ndarray:
    """The rate of each of ``rows`` (0: header unreadable), from ``{split}.rates`` or, for clips it lacks, the headers."""
    from .parallel import default_jobs, parallel_map  # headers are read only when a filter needs them
    from .scan import probe_header

    names, counts = manifest.files.take(rows), manifest.num_samples[rows]
    known_names, known_counts, known_rates = read_rate_table(manifest.path)
    found = match_rows(names, counts, known_names, known_counts)
    rates = np.where(found >= 0, known_rates[np.maximum(found, 0)] if len(known_rates) else -1, -1)
    missing = np.flatnonzero(rates < 0)
    if not len(missing):
        return rates
    logger.info("%s: reading the sample rates of %d clips from their headers", manifest.path, len(missing))
    workers = jobs if jobs is not None else min(8, default_jobs())
    headers = parallel_map(probe_header, [str(manifest.root / names[i]) for i in missing], jobs=workers)
    rates[missing] = [0 if isinstance(header, str) else header.sample_rate for header in headers]
    if not rates.any():  # a missing root: nothing worth keeping
        return rates
    # the entries not looked up now, then every one looked up (a later line wins when read back)
    kept = np.ones(len(known_names), bool)
    kept[found[found >= 0]] = False
    old = np.flatnonzero(kept)
    write_rate_table(
        manifest.path,
        StringTable.concat([known_names.take(old), names]),
        np.concatenate([known_counts[old], counts]),
        np.concatenate([known_rates[old], rates]),
    )
    return rates


def _parse_lines(path: Path, text: str) -> Tuple[str, List[str], List[int]]:
    """Line-by-line parse: any line break str.splitlines knows, and the file:line of the first bad line."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(f"{path}: empty manifest; the first line must be the audio root folder")
    files: List[str] = []
    counts: List[int] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ManifestError(f"{path}:{lineno}: expected 'relative/path<TAB>num_samples', got {line!r}")
        rel, count = parts
        try:
            n = int(count)
        except ValueError:
            raise ManifestError(f"{path}:{lineno}: sample count {count!r} is not an integer") from None
        if n < 0:
            raise ManifestError(f"{path}:{lineno}: negative sample count {n}")
        if n >= 2**63:
            raise ManifestError(f"{path}:{lineno}: sample count {n} is too large")
        files.append(rel)
        counts.append(n)
    return lines[0], files, counts


def read_manifest(path: Union[str, Path], min_samples: int = 0, jobs: Optional[int] = None) -> Manifest:
    """Parse a manifest, keeping clips of at least ``min_samples`` samples at 16 kHz.

    ``min_samples`` is counted as the model sees clips, after resampling to
    16 kHz (see the module docstring); a clip whose header cannot be read is
    judged by its count as given (the reader replaces it anyway). Left-out clips
    are in ``Manifest.dropped`` and one log line counts them and names a few.
    ``jobs``: processes reading headers for the filter (default: up to 8).

    Raises :class:`ManifestError` naming the file and line for a missing file,
    an empty manifest, text that is not UTF-8, or a line that is not
    ``path<TAB>integer``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        raw.isascii() or raw.decode("utf-8")  # checked once here: rows are decoded one by one when read
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ManifestError(f"{path}:{line}: not UTF-8 text ({err.reason}); write the manifest as UTF-8") from None
    if b"\r\n" in raw:
        raw = raw.replace(b"\r\n", b"\n")
    parsed = None
    if not has_odd_line_breaks(raw):
        end = raw.find(b"\n")
        end = len(raw) if end < 0 else end
        root_line = raw[:end].decode("utf-8")
        if root_line.strip() and not any(ord(c) < 32 for c in root_line):
            parsed = parse_name_int_lines(raw, 1, start=end + 1)  # None: not plain, parsed line by line below
    if parsed is None:  # also reports an empty root line or the first bad line
        root_line, names, counts = _parse_lines(path, raw.decode("utf-8"))
        parsed = StringTable.from_strings(names), np.array(counts, np.int64).reshape(-1, 1)
    root = Path(root_line.strip())
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    files, values = parsed
    manifest = Manifest(path=path, root=root, files=files, num_samples=values[:, 0].copy(), min_samples=max(0, min_samples))
    if min_samples > 0 and len(manifest):
        _drop_short_clips(manifest, min_samples, jobs)
    return manifest


def _drop_short_clips(manifest: Manifest, min_samples: int, jobs: Optional[int]) -> None:
    files, counts = manifest.files, manifest.num_samples
    # a clip this long is long enough at any rate up to 768 kHz; only the others need their rate
    unsure = np.flatnonzero(counts < min_samples * MAX_RATE_FACTOR)
    rates = np.full(len(files), MODEL_RATE, np.int64)
    if len(unsure):
        rates[unsure] = _sample_rates(manifest, unsure, jobs)
    keep = _samples_at_16k_array(counts, rates) >= min_samples
    if keep.all():
        return
    dropped = np.flatnonzero(~keep)
    manifest.dropped = ShortClips(files.take(dropped), counts[dropped], rates[dropped])
    manifest.files = files.take(keep)
    manifest.num_samples = counts[keep]
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
