"""Decoding audio files into mono float32 waveforms."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np
import soundfile as sf
import torch

__all__ = ["AudioLoadError", "load_audio"]


class AudioLoadError(RuntimeError):
    """A clip could not be turned into a usable waveform; the message names the file."""


def load_audio(path: Union[str, Path]) -> Tuple[torch.Tensor, int]:
    """Read an audio file as a mono float32 waveform.

    Several channels are averaged. Raises :class:`AudioLoadError` for a missing,
    undecodable or empty file, or one holding NaN or Inf samples.

    Returns:
        waveform: (time,) float32 tensor at the file's own sample rate.
        sample_rate: that rate in Hz.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioLoadError(f"{path}: file not found")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad files
        detail = getattr(err, "error_string", None) or str(err)  # libsndfile's reason, without the path
        raise AudioLoadError(f"{path}: cannot decode audio ({detail})") from err
    if data.shape[0] == 0:
        raise AudioLoadError(f"{path}: file holds no samples")
    if not np.isfinite(data).all():
        raise AudioLoadError(f"{path}: contains NaN or Inf samples")
    # (time, channels) -> (time,)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return torch.from_numpy(np.ascontiguousarray(mono)), int(sample_rate)
