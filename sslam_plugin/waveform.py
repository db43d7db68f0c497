"""Waveforms from users, checked and converted once, before the front end sees them.

Every waveform path of inference (:class:`~sslam_plugin.inference.PretrainedAudioEncoder`,
:func:`~sslam_plugin.clips.clip_windows`, the HEAR API in :mod:`sslam_plugin.hear`) goes
through :func:`mono_clip` (one clip) or :func:`batch_clips` (a batch), so that a bad
input stops with a message instead of turning into plausible-looking features.

=====================================  ======================================================
input                                  what happens
=====================================  ======================================================
float16 / bfloat16 / float32 / float64  used as given, as float32; float audio is expected in
                                       [-1, 1] (a peak above 2 is logged once per process: it
                                       usually means int16 values converted with ``.float()``)
int16, int32, int8 PCM                 scaled to [-1, 1]: divided by 2**15, 2**31, 2**7 (what
                                       soundfile and torchaudio do when they decode PCM)
uint8 PCM (8-bit WAV)                  ``(x - 128) / 128``
int64, bool, complex                   refused: no PCM format stores them, so their scale is
                                       unknown (numpy makes int64 arrays from plain lists)
NaN or Inf samples                     refused (:class:`WaveformError` names the clip and the
                                       first bad sample)
no samples                             refused
=====================================  ======================================================

Shapes (the last axis is always time):

* ``(time,)``: one mono clip.
* ``(N, time)``: N mono clips. A channels-first stereo clip ``(2, time)`` has the same
  shape as a batch of two mono clips and is read as such: the two cannot be told apart.
  Pass a multi-channel clip as ``(1, C, time)``, or as one ``(C, time)`` item of a list.
* ``(N, C, time)``: N clips of C channels, averaged to mono.
* a list: each item is one clip, ``(time,)`` or ``(C, time)`` (channels averaged).
* A last axis shorter than one 25 ms analysis window (400 samples at 16 kHz) is refused
  as a layout mistake: e.g. ``(time, channels)``, as soundfile returns audio, must be
  transposed first. Such a clip could not give a single fbank frame anyway.
"""

from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Set, Union

import numpy as np
import torch

__all__ = ["WaveformError", "PCM_SCALES", "batch_clips", "mono_clip", "min_samples", "to_float"]

logger = logging.getLogger(__name__)

Waveform = Union[torch.Tensor, np.ndarray]
Waveforms = Union[Waveform, Sequence[Waveform]]

# integer dtype -> (offset, scale): float = (x - offset) / scale
PCM_SCALES = {
    torch.int8: (0.0, 2.0**7),
    torch.int16: (0.0, 2.0**15),
    torch.int32: (0.0, 2.0**31),
    torch.uint8: (128.0, 2.0**7),
}
LOUD_FLOAT_PEAK = 2.0  # float audio beyond this is almost surely unscaled integer PCM
FRAME_LENGTH_MS = 25.0  # one Kaldi analysis window, the shortest usable clip

_logged: Set[str] = set()  # messages already logged by this process (see _log_once)


class WaveformError(ValueError):
    """A waveform the front end must not use; the message says what arrived and what to do."""


def min_samples(sample_rate: int, frame_length_ms: float = FRAME_LENGTH_MS) -> int:
    """Samples in one analysis window at ``sample_rate``: the shortest clip that gives a frame."""
    return math.ceil(sample_rate * frame_length_ms / 1000.0)


def _log_once(key: str, message: str, *args: object) -> None:
    if key not in _logged:
        _logged.add(key)
        logger.warning(message, *args)


def _as_tensor(x: Waveform, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.byteorder not in ("=", "|"):  # torch cannot wrap big-endian arrays
            x = x.astype(x.dtype.newbyteorder("="))
        return torch.from_numpy(x)
    raise WaveformError(f"{what}: expected a torch tensor or numpy array, got {type(x).__name__}")


def to_float(x: Waveform, what: str = "waveform") -> torch.Tensor:
    """Samples as float32, integer PCM scaled to [-1, 1] (see the module table); any shape.

    Raises:
        WaveformError: int64 / bool / complex samples, or NaN / Inf samples.
    """
    wav = _as_tensor(x, what)
    if wav.dtype in PCM_SCALES:
        offset, scale = PCM_SCALES[wav.dtype]
        return (wav.to(torch.float64) - offset).div_(scale).float()  # float64: int32 is exact there
    if wav.dtype == torch.bool or wav.is_complex() or not wav.is_floating_point():
        raise WaveformError(
            f"{what}: samples of dtype {wav.dtype} have no known scale; pass float audio in [-1, 1] "
            "or integer PCM as int16, int32, int8 or uint8"
        )
    wav = wav.float()
    finite = torch.isfinite(wav)
    if not bool(finite.all()):
        bad = (~finite).nonzero()
        first = tuple(int(i) for i in bad[0])
        where = first[0] if len(first) == 1 else first  # (clip, sample) in a batch
        raise WaveformError(
            f"{what} holds {bad.shape[0]} NaN or Inf samples (first at index {where}); "
            "features of such a clip would be meaningless"
        )
    if wav.numel():
        peak = float(wav.abs().max())
        if peak > LOUD_FLOAT_PEAK:
            _log_once(
                "loud_float",
                "float waveform with peak %.1f: float audio is expected in [-1, 1] (int16 samples converted "
                "with .float() must be divided by 32768); computing features of it as given",
                peak,
            )
    return wav


def _check_time_axis(wav: torch.Tensor, sample_rate: Optional[int], what: str) -> None:
    if wav.shape[-1] == 0:
        raise WaveformError(f"{what} holds no samples (shape {tuple(wav.shape)})")
    if sample_rate is None or wav.dim() < 2:
        return
    needed = min_samples(sample_rate)
    if wav.shape[-1] < needed:
        raise WaveformError(
            f"{what} has shape {tuple(wav.shape)}: the last axis must be time, but it holds {wav.shape[-1]} "
            f"samples, fewer than one {FRAME_LENGTH_MS:g} ms analysis window ({needed} at {sample_rate} Hz). "
            "If this is (time, channels) audio, as soundfile returns it, transpose it to (channels, time)"
        )


def mono_clip(waveform: Waveform, sample_rate: Optional[int] = None, what: str = "waveform") -> torch.Tensor:
    """One clip as a (time,) float32 mono waveform.

    Args:
        waveform: (time,) or (channels, time), float or integer PCM (see the module table).
        sample_rate: its rate, for the layout check of (channels, time) input.
        what: how messages name the clip.

    Returns:
        (time,) float32; several channels are averaged.

    Raises:
        WaveformError: see the module docstring.
    """
    wav = to_float(waveform, what)
    if wav.dim() not in (1, 2):
        raise WaveformError(f"{what}: expected a (time,) or (channels, time) clip, got shape {tuple(wav.shape)}")
    _check_time_axis(wav, sample_rate, what)
    return wav.mean(dim=0) if wav.dim() == 2 else wav  # (C, time) -> (time,)


def batch_clips(waveforms: Waveforms, sample_rate: Optional[int] = None) -> List[torch.Tensor]:
    """A batch as a list of (time,) float32 mono clips (shapes: see the module docstring).

    Args:
        waveforms: (time,), (N, time), (N, C, time), or a list of (time,) / (C, time) clips.
        sample_rate: their rate, for the layout check.

    Returns:
        N tensors of shape (time,).
    """
    if isinstance(waveforms, (torch.Tensor, np.ndarray)):
        wav = to_float(waveforms, "waveform")
        if wav.dim() == 1:
            _check_time_axis(wav, sample_rate, "waveform")
            return [wav]
        if wav.dim() not in (2, 3):
            raise WaveformError(
                f"expected a (time,), (batch, time) or (batch, channels, time) waveform, got shape {tuple(wav.shape)}"
            )
        _check_time_axis(wav, sample_rate, "waveform")
        if wav.dim() == 3:
            wav = wav.mean(dim=1)  # (N, C, time) -> (N, time)
        return list(wav)
    if isinstance(waveforms, (str, bytes)) or not isinstance(waveforms, Sequence):
        raise WaveformError(
            f"expected waveforms as a tensor, an array or a list of them, got {type(waveforms).__name__}"
        )
    return [mono_clip(w, sample_rate, f"clip {i}") for i, w in enumerate(waveforms)]
