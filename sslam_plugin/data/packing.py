"""Packing a manifest's clips into zip shards: ``sslam-pack``'s library.

Output, for a manifest ``{split}.tsv``:

* ``DEST/shards/{split}-00000.zip`` ...: ``shard_size`` clips each, as stored
  (uncompressed) members holding each clip's file bytes as they are (WAV,
  FLAC, Ogg, MP3: whatever the loose file was, so a packed clip decodes to
  the loose file's samples, bit for bit). A member is named by the clip's
  relative path, so clip ids and label files keep working. Clips that are
  themselves HDF5 datasets (the public EAT layout) become WAV members holding
  their samples unchanged (float32 as 32-bit float, int16 as 16-bit PCM);
  zip entries are copied with their member names.
* ``DEST/{split}.tsv``: the manifest, ``shards/{split}-00000.zip:OFFSET:LENGTH<TAB>num_samples``
  (fairseq's convention), rows in the source's order.
* the split's side files: ``{split}.lbl``, ``label_descriptors.csv`` and other
  ``{split}.*`` / ``{split}_*`` files keyed by clip id are copied;
  ``{split}_weights.csv`` (one line per clip) keeps the lines of the clips
  packed; ``{split}.rates`` lists every packed clip's rate (so training's
  length filter reads no header).
* ``DEST/rejected_{split}.tsv`` (only when some are): clips left out (missing,
  empty, unreadable) with the reason, like ``sslam-prepare-manifest``'s.

Resumable: a shard is written under ``NAME.partial`` and renamed when
complete, so a shard under its final name is whole. A rerun keeps every
shard whose central directory lists the expected clips, all stored (a cheap
check: no audio is read), and redoes the others (cut off, from another
manifest or shard size) and any leftover ``.partial``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import soundfile as sf

from ..progress import progress_bar
from .audio import AudioLoadError, file_problem
from .manifest import Manifest, read_manifest, read_sample_rates, write_sample_rates
from .packed_audio import H5Entry, PackedReadError, ZipEntry, h5_samples, member_bytes, parse_entry
from .scan import probe_header, write_lines
from .zip_members import ZipMember, zip_index, zip_member_name

__all__ = ["PackReport", "pack_manifest", "read_shard_clip", "SHARD_MARK"]

logger = logging.getLogger(__name__)

SHARD_MARK = b"sslam-pack shard 1\n"  # first line of a shard's zip comment; the rejected clips follow
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the same bytes on every run
_H5_SUBTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "int16": "PCM_16", "int32": "PCM_32", "uint8": "PCM_U8"}

PathLike = Union[str, Path]


@dataclass
class PackReport:
    """What :func:`pack_manifest` did for one manifest."""

    source: Path
    manifest: Path
    clips: int = 0  # packed
    shards: int = 0
    reused: int = 0  # complete shards kept from an earlier run
    bytes: int = 0
    rejected: Dict[str, str] = field(default_factory=dict)  # source entry -> reason
    copied: List[str] = field(default_factory=list)  # side files

    def summary(self) -> str:
        line = (
            f"{self.source} -> {self.manifest}: {self.clips} clips in {self.shards} shards "
            f"({self.bytes / 1e6:.1f} MB; {self.reused} kept from an earlier run)"
        )
        if self.rejected:
            line += f", {len(self.rejected)} left out (listed in {self.manifest.parent / ('rejected_' + self.manifest.stem + '.tsv')})"
        if self.copied:
            line += f"; copied {', '.join(self.copied)}"
        return line


def read_shard_clip(full_path: PathLike, rel: str) -> Tuple[str, bytes, int]:
    """(member name, bytes to store, sample rate) of one manifest clip; raises AudioLoadError naming the clip."""
    path = os.fspath(full_path)
    entry = parse_entry(path)
    try:
        if isinstance(entry, ZipEntry):
            data = member_bytes(entry)
            return zip_member_name(entry) or rel, data, _header_rate(path, data)
        if isinstance(entry, H5Entry):
            samples, rate = h5_samples(entry)
            if samples.size == 0:
                raise PackedReadError("file holds no samples")
            subtype = _H5_SUBTYPES.get(samples.dtype.name)
            if subtype is None:
                raise PackedReadError(f"samples of type {samples.dtype} have no WAV equivalent")
            buffer = io.BytesIO()
            sf.write(buffer, samples, rate, subtype=subtype, format="WAV")
            return f"{rel}.wav", buffer.getvalue(), rate
    except PackedReadError as err:
        raise AudioLoadError(f"{path}: {err}") from err
    problem = file_problem(path)
    if problem is not None:
        raise AudioLoadError(f"{path}: {problem}")
    with open(path, "rb") as handle:
        data = handle.read()
    return rel, data, _header_rate(path, data)


def _header_rate(path: str, data: bytes) -> int:
    """The sample rate in a clip's header, read from memory as the packed clip will be read."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as clip:
            frames, rate = clip.frames, int(clip.samplerate)
    except Exception as err:
        detail = getattr(err, "error_string", None) or type(err).__name__
        raise AudioLoadError(f"{path}: cannot decode audio ({detail})") from err
    if frames <= 0:
        raise AudioLoadError(f"{path}: file holds no samples")
    return rate


def _shard_comment(rejected: Sequence[Tuple[str, str]]) -> bytes:
    text = SHARD_MARK + "".join(f"{rel}\t{' '.join(reason.split())}\n" for rel, reason in rejected).encode("utf-8")
    return text[:65535]  # the zip format's limit; reasons past it are dropped (the clips are still left out)


def _read_shard(path: Path, expected: Sequence[str]) -> Optional[Tuple[List[Optional[ZipMember]], Dict[int, str]]]:
    """A complete shard's members aligned with ``expected`` (None where left out) and the reasons; None
    when the shard is not one this manifest's slice would give (cut off, other clips, compressed)."""
    try:
        members, comment = zip_index(path)
        size = path.stat().st_size
    except (OSError, zipfile.BadZipFile):
        return None
    if not comment.startswith(SHARD_MARK):
        return None
    reasons = {}
    for line in comment[len(SHARD_MARK):].decode("utf-8", "replace").splitlines():
        rel, _, reason = line.partition("\t")
        reasons[rel] = reason or "left out when the shard was written"
    aligned: List[Optional[ZipMember]] = []
    remaining = list(members)
    for rel in expected:
        if rel in reasons:
            aligned.append(None)
            continue
        if not remaining:
            return None
        member = remaining.pop(0)
        # named by the clip's path (an HDF5 clip: plus .wav); a member copied from another zip keeps its name
        named = member.name in (rel, f"{rel}.wav") or isinstance(parse_entry(rel), ZipEntry)
        if not named or not member.stored or member.length != member.file_size or member.offset + member.length > size:
            return None
        aligned.append(member)
    if remaining:
        return None
    return aligned, {i: reasons.get(rel, "") for i, rel in enumerate(expected) if aligned[i] is None}


def _write_shard(path: Path, manifest: Manifest, indices: Sequence[int], rates: Dict[int, int], bar) -> None:
    """Write the clips ``indices`` into the shard ``path`` (via ``NAME.partial``); their rates into ``rates``."""
    partial = path.with_name(path.name + ".partial")
    rejected: List[Tuple[str, str]] = []
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for i in indices:
            rel = manifest.files[i]
            try:
                name, data, rates[i] = read_shard_clip(manifest.full_path(i), rel)
            except AudioLoadError as err:
                prefix = f"{manifest.full_path(i)}: "
                reason = str(err)[len(prefix):] if str(err).startswith(prefix) else str(err)
                rejected.append((rel, reason))
                logger.warning("left out %s: %s", rel, reason)
            else:
                info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
            bar.update(1)
        archive.comment = _shard_comment(rejected)
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)  # only now does the shard exist under its name: a whole one


def _copy_side_files(source: Manifest, dest: Path, split: str, kept: Sequence[int], entries: Sequence[str]) -> List[str]:
    folder = source.path.parent
    copied: List[str] = []
    for side in sorted(folder.iterdir()):
        name = side.name
        ours = name == "label_descriptors.csv" or name.startswith((f"{split}.", f"{split}_"))
        rewritten = name in (f"{split}.tsv", f"{split}.rates", f"{split}_weights.csv")
        if not ours or rewritten or not side.is_file() or (dest / name).resolve() == side.resolve():
            continue
        shutil.copyfile(side, dest / name)
        copied.append(name)
    weights = folder / f"{split}_weights.csv"
    if weights.is_file():
        lines = [line for line in weights.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(lines) == len(source):
            write_lines(dest / weights.name, [lines[i] for i in kept])
            copied.append(weights.name)
        else:
            logger.warning("%s: %d lines for %d clips; not copied", weights, len(lines), len(source))
    return copied


def _write_rates(source: Manifest, target: Path, kept: Sequence[int], entries: Sequence[str], rates: Dict[int, int]) -> None:
    """``{split}.rates`` for every packed clip, so that training's length filter reads no header: the rates
    read while writing shards, else those of an earlier run or of the source, else the member's header."""
    earlier, given = read_sample_rates(target), read_sample_rates(source.path)
    rows = []
    for entry, i in zip(entries, kept):
        n = source.num_samples[i]
        rate = rates.get(i) or earlier.get((entry, n)) or given.get((source.files[i], n))
        if not rate:
            header = probe_header(os.path.join(os.path.realpath(target.parent), entry))
            rate = 0 if isinstance(header, str) else header.sample_rate
        rows.append((entry, n, rate))
    write_sample_rates(target, rows)


def _shard_files(shards: Path, split: str, suffix: str) -> List[Path]:
    """The files named like this split's shards (``{split}-00000`` + ``suffix``), not another split's."""
    pattern = re.compile(rf"{re.escape(split)}-\d{{5,}}{re.escape(suffix)}")
    return sorted(p for p in shards.iterdir() if pattern.fullmatch(p.name))


def pack_manifest(
    manifest_path: PathLike, dest: PathLike, shard_size: int = 1000, show_progress: bool = False
) -> PackReport:
    """Pack the clips of ``manifest_path`` into zip shards under ``dest`` (see the module docstring).

    Returns the report; raises ManifestError for an unreadable manifest and ValueError for a
    ``shard_size`` under 1 or a ``dest`` whose manifest would overwrite the source.
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    source = read_manifest(manifest_path)
    split = source.path.stem
    dest = Path(dest)
    target = dest / f"{split}.tsv"
    if target.resolve() == source.path.resolve():
        raise ValueError(f"{target} is the manifest being packed; choose another destination folder")
    shards = dest / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    report = PackReport(source=source.path, manifest=target)
    total = len(source)
    count = -(-total // shard_size)
    names = [f"{split}-{k:05d}.zip" for k in range(count)]
    for stale in _shard_files(shards, split, ".zip.partial"):  # a run stopped while writing it
        logger.info("removing %s, left by a stopped run", stale)
        stale.unlink()
    entries: List[str] = []
    kept: List[int] = []
    rates: Dict[int, int] = {}  # clip index -> rate, of the clips written in this run
    bar = progress_bar(total, desc=f"packing {split}", unit="clip", enabled=show_progress)
    try:
        for k, name in enumerate(names):
            indices = range(k * shard_size, min(total, (k + 1) * shard_size))
            expected = [source.files[i] for i in indices]
            path = shards / name
            found = _read_shard(path, expected) if path.exists() else None
            if found is not None:
                report.reused += 1
                bar.update(len(indices))
            else:
                if path.exists():
                    logger.warning("%s is not a complete shard of %s; writing it again", path, source.path)
                _write_shard(path, source, indices, rates, bar)
                found = _read_shard(path, expected)
                if found is None:
                    raise RuntimeError(f"{path}: the shard just written does not read back; is {shards} full?")
            members, reasons = found
            for j, (i, member) in enumerate(zip(indices, members)):
                if member is None:
                    report.rejected[source.files[i]] = reasons.get(j, "")
                    continue
                entries.append(f"shards/{name}:{member.offset}:{member.length}")
                kept.append(i)
                report.bytes += member.length
    finally:
        bar.close()
    listed = set(names)
    for extra in _shard_files(shards, split, ".zip"):  # from a run with a smaller shard size
        if extra.name not in listed:
            logger.warning("%s is not part of %s; it is left in place but not used", extra, target)
    root = os.path.realpath(dest)
    write_lines(target, [root] + [f"{entry}\t{source.num_samples[i]}" for entry, i in zip(entries, kept)])
    rejected_path = dest / f"rejected_{split}.tsv"
    if report.rejected:
        write_lines(rejected_path, [str(source.root)] + [f"{rel}\t{reason}" for rel, reason in report.rejected.items()])
    elif rejected_path.exists():
        rejected_path.unlink()
    _write_rates(source, target, kept, entries, rates)
    report.copied = _copy_side_files(source, dest, split, kept, entries)
    report.clips, report.shards = len(entries), count
    logger.info("%s", report.summary())
    return report
