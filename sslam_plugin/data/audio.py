"""Decoding audio files into mono float32 waveforms, whole or only their beginning.

Every command and the training readers name an unusable file with the same
words, made here (:func:`file_problem`, :func:`load_audio`): ``file not found``,
``empty file (0 bytes)``, ``cannot decode audio (<libsndfile's reason>)``,
``file holds no samples``, ``contains NaN or Inf samples``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple, Union

import numpy as np
import soundfile as sf
import torch

__all__ = [
    "AudioLoadError",
    "EMPTY_FILE",
    "audio_blocks",
    "NOT_FOUND",
    "file_problem",
    "load_audio",
]

NOT_FOUND = "file not found"
EMPTY_FILE = "empty file (0 bytes)"


class AudioLoadError(RuntimeError):
    """A clip could not be turned into a usable waveform; the message names the file."""


def file_problem(path: Union[str, Path]) -> Optional[str]:
    """Why ``path`` cannot hold audio before decoding it (``NOT_FOUND``, ``EMPTY_FILE``), or None."""
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
    problem = file_problem(path)
    if problem is not None:
        raise AudioLoadError(f"{path}: {problem}")
    try:
        with sf.SoundFile(str(path)) as handle:
            sample_rate = int(handle.samplerate)
            limit = max_frames(sample_rate, int(handle.frames)) if callable(max_frames) else max_frames
            frames = -1 if limit is None else max(0, int(limit))
            data = handle.read(frames, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad files
        raise _decode_error(path, err) from err
    if data.shape[0] == 0:
        raise AudioLoadError(f"{path}: file holds no samples")
    if not np.isfinite(data).all():
        raise AudioLoadError(f"{path}: contains NaN or Inf samples")
    # (time, channels) -> (time,)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono)), sample_rate


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
    problem = file_problem(path)
    if problem is not None:
        raise AudioLoadError(f"{path}: {problem}")
    try:
        handle = sf.SoundFile(str(path))
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
