"""Clips packed into archives, read as the field stores them.

A manifest entry (a path under the manifest's root) may name a clip inside an
archive instead of a file of its own:

* ``path/to/archive.zip:OFFSET:LENGTH``: fairseq's convention. The LENGTH bytes
  at byte OFFSET of the archive are a whole audio file (WAV, FLAC, any format
  libsndfile reads, any rate), as an uncompressed (stored) zip member holds
  them. One positioned read, decoded from memory: the samples are the loose
  file's, bit for bit.
* ``path/to/part.h5/CLIP_ID`` (or ``.hdf5``): the public EAT layout. Dataset
  CLIP_ID of the HDF5 file holds a 1-D waveform; its rate is the dataset's or
  the file's ``sample_rate`` (or ``sr``) attribute, else 32 kHz (what the
  public EAT reader assumes). Integer samples are scaled as libsndfile scales
  PCM (int16 / 32768).

Each process keeps a few archives open (least recently used closed first).
A forked DataLoader worker opens its own: the caches note the process id, and
HDF5 handles, which must not cross a fork, are never used by a child.
Problems come back as the reasons :mod:`sslam_plugin.data.audio` prints after
the entry's path (:class:`PackedReadError`).
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

import numpy as np

__all__ = [
    "H5Entry", "PackedEntry", "PackedReadError", "ZipEntry", "archives_of", "DEFAULT_H5_RATE",
    "close_packed_handles", "h5_header", "h5_samples", "h5_waveform", "member_bytes", "member_file",
    "packed_header", "packed_problem", "parse_entry",
]

DEFAULT_H5_RATE = 32000  # the public EAT reader's fixed rate for its HDF5 waveforms
WHOLE_READ_BYTES = 4 << 20  # members up to this size are read in one go; longer ones as far as decoded
MAX_OPEN_ZIPS = 64
MAX_OPEN_H5 = 16
RATE_ATTRIBUTES = ("sample_rate", "sr")

_ZIP_ENTRY = re.compile(r"^(?P<archive>.+\.zip):(?P<offset>\d+):(?P<length>\d+)$", re.IGNORECASE)
_H5_ENTRY = re.compile(r"^(?P<file>.+?\.(?:h5|hdf5))/(?P<key>[^/].*)$", re.IGNORECASE)


class PackedReadError(Exception):
    """A packed clip that cannot be read; the message is the reason (without the entry's path)."""


@dataclass(frozen=True)
class ZipEntry:
    """``archive.zip:offset:length``: the member's bytes lie at ``[offset, offset + length)`` of ``archive``."""

    archive: str
    offset: int
    length: int


@dataclass(frozen=True)
class H5Entry:
    """``part.h5/key``: dataset ``key`` of the HDF5 file ``archive``."""

    archive: str
    key: str


PackedEntry = Union[ZipEntry, H5Entry]


def parse_entry(path: Union[str, "os.PathLike[str]"], look: bool = True) -> Optional[PackedEntry]:
    """The packed clip a path names, or None for a plain file path.

    ``look``: make sure an ``x.h5/...`` path is not a file in a folder named ``x.h5`` (one look per
    folder and process); False: judge the text alone.
    """
    text = os.fspath(path)
    match = _ZIP_ENTRY.match(text)
    if match:
        return ZipEntry(match["archive"], int(match["offset"]), int(match["length"]))
    match = _H5_ENTRY.match(text)
    if match and not (look and _is_directory(match["file"])):
        return H5Entry(match["file"], match["key"])
    return None


def archives_of(entries: Iterable[str]) -> Dict[str, int]:
    """{archive: clips} of the packed entries among manifest paths (plain paths are skipped).

    Fast on large manifests: an entry in the same archive as the one before costs one prefix test.
    """
    counts: Dict[str, int] = {}
    prefix, archive = None, ""
    for rel in entries:
        if prefix is not None and rel.startswith(prefix):
            counts[archive] += 1
            continue
        if ":" not in rel and "5/" not in rel:  # neither .zip: nor .h5/ nor .hdf5/
            continue
        entry = parse_entry(rel, look=False)
        if entry is None:
            continue
        archive = entry.archive
        prefix = archive + (":" if isinstance(entry, ZipEntry) else "/")
        counts[archive] = counts.get(archive, 0) + 1
    return counts


_directories: Dict[str, bool] = {}


def _is_directory(path: str) -> bool:
    known = _directories.get(path)
    if known is None:
        known = _directories[path] = os.path.isdir(path)
    return known


# --- open archives, per process ---------------------------------------------------------------------


class _Handles:
    """Least-recently-used open archives of this process; a forked child starts with none of its parent's."""

    def __init__(self, opener: Callable[[str], Any], closer: Callable[[Any], None], size: int, close_inherited: bool):
        self.opener, self.closer, self.size, self.close_inherited = opener, closer, size, close_inherited
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.items: "OrderedDict[str, Any]" = OrderedDict()
        self.inherited: list = []  # a parent's handles a child must not use nor close

    def _after_fork(self) -> None:
        self.pid, self.lock = os.getpid(), threading.RLock()
        if self.close_inherited:
            for handle in self.items.values():
                self.closer(handle)
        else:
            self.inherited.extend(self.items.values())
        self.items = OrderedDict()

    def get(self, path: str) -> Any:
        """The open handle of ``path`` (opened now if needed); raises what the opener raises."""
        if self.pid != os.getpid():
            self._after_fork()
        with self.lock:
            handle = self.items.get(path)
            if handle is not None:
                self.items.move_to_end(path)
                return handle
            handle = self.opener(path)
            self.items[path] = handle
            while len(self.items) > self.size:
                self.closer(self.items.popitem(last=False)[1])
            return handle

    def close_all(self) -> None:
        if self.pid != os.getpid():
            self._after_fork()
        with self.lock:
            while self.items:
                self.closer(self.items.popitem()[1])


class _OpenZip:
    """A raw descriptor and the archive's size when opened (refreshed when an entry reaches past it)."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size


def _open_h5(path: str) -> Any:
    try:
        import h5py
    except ImportError as err:  # the hdf5 extra
        raise PackedReadError(
            "reading HDF5 entries needs h5py: pip install 'sslam-plugin[hdf5]' (or pip install h5py)"
        ) from err
    return h5py.File(path, "r", locking=False)  # read-only; file locks fail on many cluster file systems


_zips = _Handles(_OpenZip, lambda z: os.close(z.fd), MAX_OPEN_ZIPS, close_inherited=True)
_h5s = _Handles(_open_h5, lambda f: f.close(), MAX_OPEN_H5, close_inherited=False)


def close_packed_handles() -> None:
    """Close every archive this process holds open (e.g. before forking workers, or in tests)."""
    _zips.close_all()
    _h5s.close_all()


def _archive_reason(err: OSError, archive: str) -> str:
    if isinstance(err, FileNotFoundError):
        return f"file not found (the archive {archive})"
    if isinstance(err, IsADirectoryError):
        return f"the archive {archive} is a folder, not a file"
    return f"cannot read the archive {archive} ({err.strerror or err})"


# --- zip members ------------------------------------------------------------------------------------


def _zip_handle(entry: ZipEntry) -> _OpenZip:
    try:
        handle = _zips.get(entry.archive)
    except OSError as err:
        raise PackedReadError(_archive_reason(err, entry.archive)) from err
    end = entry.offset + entry.length
    if end > handle.size:
        handle.size = os.fstat(handle.fd).st_size  # the archive may have grown since it was opened
        if end > handle.size:
            raise PackedReadError(
                f"damaged archive member (bytes {entry.offset}..{end} lie past the end of {entry.archive}, "
                f"{handle.size} bytes)"
            )
    return handle


def _pread(entry: ZipEntry, handle: _OpenZip, size: int, position: int) -> bytes:
    try:
        with _zips.lock:  # an evicted descriptor is closed under the same lock
            return os.pread(handle.fd, size, entry.offset + position)
    except OSError as err:  # e.g. EIO from a failing disk or a network file system gone away
        raise PackedReadError(_archive_reason(err, entry.archive)) from err


def member_bytes(entry: ZipEntry) -> bytes:
    """The member's bytes, in one positioned read; raises :class:`PackedReadError`."""
    handle = _zip_handle(entry)
    data = _pread(entry, handle, entry.length, 0)
    if len(data) != entry.length:
        raise PackedReadError(f"damaged archive member (read {len(data)} of {entry.length} bytes)")
    return data


class _MemberView(io.RawIOBase):
    """The member as a read-only file: positioned reads inside ``[offset, offset + length)``."""

    def __init__(self, entry: ZipEntry, handle: _OpenZip):
        super().__init__()
        self.entry, self.handle, self.position = entry, handle, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.entry.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:  # type: ignore[override]
        size = max(0, min(len(buffer), self.entry.length - self.position))
        data = _pread(self.entry, self.handle, size, self.position) if size else b""
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def member_file(entry: ZipEntry, whole: Optional[bool] = None) -> io.BufferedIOBase:
    """A file object over the member for soundfile: its bytes in memory (``whole``, default for members
    up to 4 MiB), else a buffered view that reads only what is decoded (headers, beginnings of long
    files). Raises :class:`PackedReadError`."""
    if whole is None:
        whole = entry.length <= WHOLE_READ_BYTES
    if whole:
        return io.BytesIO(member_bytes(entry))
    handle = _zip_handle(entry)
    return io.BufferedReader(_MemberView(entry, handle), buffer_size=max(1, min(entry.length, 1 << 16)))


# --- HDF5 datasets ----------------------------------------------------------------------------------


def _dataset(entry: H5Entry) -> Tuple[Any, int]:
    """(dataset, sample rate) of an entry; raises :class:`PackedReadError`."""
    try:
        handle = _h5s.get(entry.archive)
    except OSError as err:
        if isinstance(err, (FileNotFoundError, IsADirectoryError)) or not os.path.exists(entry.archive):
            raise PackedReadError(_archive_reason(FileNotFoundError(), entry.archive)) from err
        raise PackedReadError(f"cannot read the archive {entry.archive} ({' '.join(str(err).split())})") from err
    try:
        dataset = handle[entry.key]
    except KeyError:
        raise PackedReadError(f"damaged archive member (no dataset {entry.key!r} in {entry.archive})") from None
    except Exception as err:  # a damaged file: HDF5 reports it through several exception types
        raise PackedReadError(f"damaged archive member ({entry.key!r}: {' '.join(str(err).split())})") from err
    if not hasattr(dataset, "shape") or dataset.ndim != 1:
        shape = getattr(dataset, "shape", "a group")
        raise PackedReadError(f"damaged archive member ({entry.key!r} in {entry.archive} is {shape}, not a 1-D waveform)")
    if dataset.dtype.kind not in "fiu":
        raise PackedReadError(f"damaged archive member ({entry.key!r} holds {dataset.dtype}, not audio samples)")
    return dataset, _rate_of(dataset, handle)


def _rate_of(dataset: Any, handle: Any) -> int:
    for attrs in (dataset.attrs, handle.attrs):
        for name in RATE_ATTRIBUTES:
            if name in attrs:
                return int(np.asarray(attrs[name]).reshape(-1)[0])
    return DEFAULT_H5_RATE


def _to_float32(samples: np.ndarray) -> np.ndarray:
    """Samples as float32 in [-1, 1], integers scaled as libsndfile scales PCM."""
    kind, bits = samples.dtype.kind, samples.dtype.itemsize * 8
    if kind == "f":
        return samples.astype(np.float32, copy=False)
    if kind == "u":  # unsigned PCM (8-bit WAV) is centred on half the range
        return ((samples.astype(np.float64) - 2 ** (bits - 1)) / 2 ** (bits - 1)).astype(np.float32)
    return (samples.astype(np.float64) / 2 ** (bits - 1)).astype(np.float32)


def h5_header(entry: H5Entry) -> Tuple[int, int]:
    """(samples, sample rate) of an HDF5 clip, without reading its samples."""
    dataset, rate = _dataset(entry)
    return int(dataset.shape[0]), rate


def h5_samples(entry: H5Entry) -> Tuple[np.ndarray, int]:
    """(samples as stored, rate) of an HDF5 clip: for copying it elsewhere without a conversion."""
    dataset, rate = _dataset(entry)
    return _read_slice(entry, dataset, slice(None)), rate


def h5_waveform(
    entry: H5Entry, max_frames: Optional[Callable[[int, int], Optional[int]]] = None, start: int = 0
) -> Tuple[np.ndarray, int]:
    """(float32 waveform, rate) of an HDF5 clip, from sample ``start``; only
    ``max_frames(rate, samples)`` samples when that gives a number (a slice: nothing more is read)."""
    dataset, rate = _dataset(entry)
    total = int(dataset.shape[0])
    limit = max_frames(rate, total) if max_frames is not None else None
    stop = total if limit is None else min(total, start + max(0, int(limit)))
    return _to_float32(_read_slice(entry, dataset, slice(start, stop))), rate


def _read_slice(entry: H5Entry, dataset: Any, part: slice) -> np.ndarray:
    try:
        return np.asarray(dataset[part])
    except Exception as err:  # damaged chunks, a file cut off
        raise PackedReadError(f"damaged archive member (reading {entry.key!r}: {' '.join(str(err).split())})") from err


# --- problems before decoding -----------------------------------------------------------------------


def packed_problem(entry: PackedEntry) -> Optional[str]:
    """Why ``entry`` cannot hold audio before decoding it (archive missing, member past its end, dataset
    absent, no bytes), or None. Uses the open archive: no file-system lookup per clip."""
    try:
        if isinstance(entry, ZipEntry):
            _zip_handle(entry)
            return "empty file (0 bytes)" if entry.length == 0 else None
        _dataset(entry)
    except PackedReadError as err:
        return str(err)
    return None


def packed_header(entry: PackedEntry) -> Tuple[int, int, int]:
    """(samples per channel, sample rate, channels) of a packed clip, reading only its header (a zip
    member's first bytes, an HDF5 dataset's shape); raises :class:`PackedReadError`."""
    problem = packed_problem(entry)
    if problem is not None:
        raise PackedReadError(problem)
    if isinstance(entry, H5Entry):
        samples, rate = h5_header(entry)
        return samples, rate, 1
    import soundfile as sf

    try:
        with sf.SoundFile(member_file(entry, whole=False)) as handle:
            return int(handle.frames), int(handle.samplerate), int(handle.channels)
    except PackedReadError:
        raise
    except Exception as err:  # libsndfile reports bad data through several exception types
        detail = getattr(err, "error_string", None) or type(err).__name__
        raise PackedReadError(f"cannot decode audio ({' '.join(str(detail).split())})") from err
