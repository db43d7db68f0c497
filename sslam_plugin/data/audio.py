"""Decoding audio files into mono float32 waveforms, whole or only their beginning.

Every command and the training readers name an unusable file with the same
words, made here (:func:`file_problem`, :func:`load_audio`): ``file not found``,
``empty file (0 bytes)``, ``cannot decode audio (<libsndfile's reason>)``,
``file holds no samples``, ``contains NaN or Inf samples``.

A path may also name a clip packed into an archive (``archive.zip:OFFSET:LENGTH``
or ``part.h5/CLIP_ID``, :mod:`sslam_plugin.data.packed_audio`); it is read the
same way, with the same words, plus ``file not found (the archive ...)`` and
``damaged archive member (...)`` for a missing archive or a member that is not
there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf
import torch

from .packed_audio import (
    H5Entry, PackedEntry, PackedReadError, ZipEntry, h5_header, h5_waveform, member_file, packed_problem, parse_entry,
)

__all__ = [
    "AudioLoadError",
    "EMPTY_FILE",
    "audio_blocks",
    "NOT_FOUND",
    "file_problem",
    "load_audio",
    "load_audio_ranges",
]

# Containers whose seeks libsndfile makes sample-exact (PCM and FLAC): a range read from one equals
# the same samples of a whole read. Compressed streams (Ogg, mp3) are read whole instead.
EXACT_SEEK_FORMATS = frozenset({"WAV", "WAVEX", "W64", "RF64", "AIFF", "CAF", "AU", "FLAC"})

RangeChooser = Callable[[int, int, bool], Optional[Sequence[Tuple[int, int]]]]  # see load_audio_ranges

NOT_FOUND = "file not found"
EMPTY_FILE = "empty file (0 bytes)"


class AudioLoadError(RuntimeError):
    """A clip could not be turned into a usable waveform; the message names the file."""


def file_problem(path: Union[str, Path]) -> Optional[str]:
    """Why ``path`` cannot hold audio before decoding it (``NOT_FOUND``, ``EMPTY_FILE``), or None.

    For a packed entry: its archive missing (``file not found (the archive ...)``), a member past the
    archive's end or an absent HDF5 dataset (``damaged archive member (...)``), a member of 0 bytes.
    """
    entry = parse_entry(path)
    return packed_problem(entry) if entry is not None else _file_problem(path)


def _usable_entry(path: Path) -> Optional[PackedEntry]:
    """The packed clip ``path`` names (None: a plain file); raises AudioLoadError for a problem found before decoding."""
    entry = parse_entry(path)
    problem = packed_problem(entry) if entry is not None else _file_problem(path)
    if problem is not None:
        raise AudioLoadError(f"{path}: {problem}")
    return entry


def _file_problem(path: Union[str, Path]) -> Optional[str]:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:  # a dangling link too
        return NOT_FOUND
    except OSError as err:
        return f"cannot read the file ({err.strerror})"
    if not os.path.isfile(path):
        return "not a file"
    return EMPTY_FILE if size == 0 else None


FrameLimit = Union[None, int, Callable[[int, int], Optional[int]]]  # see load_audio


def load_audio(path: Union[str, Path], max_frames: FrameLimit = None) -> Tuple[torch.Tensor, int]:
    """Read an audio file as a mono float32 waveform.

    Several channels are averaged. Raises :class:`AudioLoadError` for a missing,
    empty or undecodable file, one without samples, or one holding NaN or Inf
    samples (among those read).

    Args:
        max_frames: read at most this many samples (per channel) from the start
            of the file, or, given a callable, ``max_frames(sample_rate, frames)``
            of them, ``frames`` being the header's length (None: all). Only the
            samples read are decoded: a 10 s crop of a 30-minute file costs 10 s
            of decoding. Reading a beginning needs no seeking, so it is exact for
            every format (mp3 and Ogg included).

    Returns:
        waveform: (time,) float32 tensor at the file's own sample rate.
        sample_rate: that rate in Hz.
    """
    path = Path(path)
    entry = _usable_entry(path)
    if isinstance(entry, H5Entry):
        try:
            samples, sample_rate = h5_waveform(entry, max_frames if callable(max_frames) else _fixed(max_frames))
        except PackedReadError as err:
            raise AudioLoadError(f"{path}: {err}") from err
        data = samples[:, None]  # (time,) -> (time, 1)
    else:
        try:
            with _sound_file(path, entry) as handle:
                sample_rate = int(handle.samplerate)
                limit = max_frames(sample_rate, int(handle.frames)) if callable(max_frames) else max_frames
                frames = -1 if limit is None else max(0, int(limit))
                data = handle.read(frames, dtype="float32", always_2d=True)
        except AudioLoadError:
            raise
        except Exception as err:  # soundfile raises several types for bad files
            raise _decode_error(path, err) from err
    if data.shape[0] == 0:
        raise AudioLoadError(f"{path}: file holds no samples")
    if not np.isfinite(data).all():
        raise AudioLoadError(f"{path}: contains NaN or Inf samples")
    # (time, channels) -> (time,)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono)), sample_rate


def load_audio_ranges(path: Union[str, Path], choose: RangeChooser) -> Tuple[List[torch.Tensor], int]:
    """Read chosen sample ranges of an audio file, each as a mono float32 waveform.

    ``choose(sample_rate, frames, exact_seek)`` sees the header (``frames``: samples per channel;
    ``exact_seek``: whether a range can be read exactly, true for PCM and FLAC files and members and
    for HDF5 clips) and returns ``[(start, stop), ...]`` in samples, or None for the whole file as
    one piece (:func:`load_audio`). Same checks and messages as :func:`load_audio`.

    Returns:
        pieces: one (stop - start,) tensor per range, at the file's own rate.
        sample_rate: that rate in Hz.
    """
    path = Path(path)
    entry = _usable_entry(path)
    pieces: List[np.ndarray] = []
    if isinstance(entry, H5Entry):
        try:
            frames, sample_rate = h5_header(entry)
            ranges = choose(sample_rate, frames, True)
            for start, stop in ranges if ranges is not None else [(0, frames)]:
                pieces.append(h5_waveform(entry, _fixed(stop - start), start=start)[0][:, None])
        except PackedReadError as err:
            raise AudioLoadError(f"{path}: {err}") from err
    else:
        try:
            with _sound_file(path, entry) as handle:
                sample_rate, frames = int(handle.samplerate), int(handle.frames)
                ranges = choose(sample_rate, frames, handle.format in EXACT_SEEK_FORMATS and handle.seekable())
                for start, stop in ranges if ranges is not None else [(0, -1)]:
                    handle.seek(start)
                    pieces.append(handle.read(stop - start if stop >= 0 else -1, dtype="float32", always_2d=True))
        except AudioLoadError:
            raise
        except Exception as err:  # soundfile raises several types for bad files
            raise _decode_error(path, err) from err
    if sum(piece.shape[0] for piece in pieces) == 0:
        raise AudioLoadError(f"{path}: file holds no samples")
    if not all(np.isfinite(piece).all() for piece in pieces):
        raise AudioLoadError(f"{path}: contains NaN or Inf samples")
    mono = [piece.mean(axis=1) if piece.shape[1] > 1 else piece[:, 0] for piece in pieces]
    return [torch.from_numpy(np.ascontiguousarray(m)) for m in mono], sample_rate


def _fixed(limit: Optional[int]) -> Optional[Callable[[int, int], Optional[int]]]:
    return None if limit is None else (lambda rate, frames: limit)


def _sound_file(path: Path, entry: Optional[ZipEntry]) -> sf.SoundFile:
    """libsndfile's handle on a file, or on a zip member's bytes (read by offset from the open archive)."""
    if entry is None:
        return sf.SoundFile(str(path))
    try:
        return sf.SoundFile(member_file(entry))
    except PackedReadError as err:
        raise AudioLoadError(f"{path}: {err}") from err


def _decode_error(path: Path, err: Exception) -> AudioLoadError:
    detail = getattr(err, "error_string", None) or str(err)  # libsndfile's reason, without the path
    detail = " ".join(detail.replace(str(path), "").split()).strip(" :'") or type(err).__name__
    return AudioLoadError(f"{path}: cannot decode audio ({detail})")


def audio_blocks(path: Union[str, Path], block_frames: int = 1 << 16) -> Iterator[Tuple[np.ndarray, int]]:
    """Decode a file from its start in blocks: ``(mono float32 block, sample rate)`` pairs.

    The blocks put end to end are :func:`load_audio`'s waveform, sample for
    sample, with the same checks and messages (raised when the block holding
    the fault is reached); memory stays that of one block. No seeking, so it
    is exact for every format.
    """
    path = Path(path)
    entry = _usable_entry(path)
    if isinstance(entry, H5Entry):
        yield from _h5_blocks(path, entry, block_frames)
        return
    try:
        handle = _sound_file(path, entry)
    except AudioLoadError:
        raise
    except Exception as err:
        raise _decode_error(path, err) from err
    total = 0
    with handle:
        sample_rate = int(handle.samplerate)
        while True:
            try:
                data = handle.read(block_frames, dtype="float32", always_2d=True)
            except Exception as err:
                raise _decode_error(path, err) from err
            if data.shape[0] == 0:
                break
            if not np.isfinite(data).all():
                raise AudioLoadError(f"{path}: contains NaN or Inf samples")
            total += data.shape[0]
            yield np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]), sample_rate
    if total == 0:
        raise AudioLoadError(f"{path}: file holds no samples")


def _h5_blocks(path: Path, entry: H5Entry, block_frames: int) -> Iterator[Tuple[np.ndarray, int]]:
    """An HDF5 clip in blocks: slices of its dataset, so memory stays that of one block."""
    start = 0
    while True:
        try:
            block, sample_rate = h5_waveform(entry, _fixed(block_frames), start=start)
        except PackedReadError as err:
            raise AudioLoadError(f"{path}: {err}") from err
        if block.shape[0] == 0:
            break
        if not np.isfinite(block).all():
            raise AudioLoadError(f"{path}: contains NaN or Inf samples")
        start += block.shape[0]
        yield np.ascontiguousarray(block), sample_rate
    if start == 0:
        raise AudioLoadError(f"{path}: file holds no samples")
