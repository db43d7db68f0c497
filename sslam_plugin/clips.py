"""Features of whole clips: fbank windows over long clips, and the granularities.

Granularities (N clips, L = R * F patches: R time rows of F frequency patches, D width):

* ``"all"``: (N, 1 + L, D), the CLS token then the patches, time-major;
* ``"patch"``: (N, L, D), the patch tokens (``"frame"``, its name before 0.2, still works:
  :data:`sslam_plugin.vocabulary.LEGACY_NAMES`);
* ``"utterance"``: (N, D), the CLS token (``utterance_pooling="cls"``, what EAT's
  fine-tuning uses) or the mean of the patch tokens (``"mean"``);
* ``"time"``: (N, R, D), the mean over the F frequency patches of each time row,
  with timestamps (R,): the centre of row r, ``(P * r + P / 2) * frame_shift``
  seconds (frames [P r, P r + P), P = 16, 10 ms apart).
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .data.audio import audio_blocks, load_audio
from .data.robust import crop_read_frames, crop_samples
from .features import SAMPLE_RATE, FbankConfig, compute_fbank, normalize_fbank, resample_to
from .vocabulary import parse_granularity, parse_pooling
from .waveform import mono_clip

__all__ = [
    "TimeFeatures",
    "ClipFeatures",
    "ClipWindows",
    "as_tensor",
    "check_granularity",
    "clip_windows",
    "combine_windows",
    "read_clip_windows",
    "row_timestamps",
]

logger = logging.getLogger(__name__)



class TimeFeatures(NamedTuple):
    features: torch.Tensor  # (N, R, D)
    timestamps: torch.Tensor  # (R,) seconds, centre of each patch row


class ClipFeatures(NamedTuple):
    """One clip's features from :meth:`PretrainedAudioEncoder.extract_clips`."""

    features: torch.Tensor  # (L', D), (R', D), (D,) or (1 + L', D), by granularity
    timestamps: Optional[torch.Tensor]  # (R',) seconds for "time", else None
    num_frames: int  # fbank frames of the whole clip before padding or cropping


class ClipWindows(NamedTuple):
    fbank: torch.Tensor  # (W, target_length, M) normalised windows
    num_frames: int  # fbank frames of the whole clip


def as_tensor(x: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """A waveform as a tensor (numpy arrays are wrapped, not copied)."""
    return torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x


def clip_windows(
    waveform: Union[torch.Tensor, np.ndarray],
    sample_rate: int,
    frontend: FbankConfig,
    long_clips: str = "crop",
) -> ClipWindows:
    """Normalised fbank windows of one clip.

    ``"crop"``: one window, the first ``target_length`` frames (zero-padded if
    shorter), exactly what training and :meth:`extract_features` use.
    ``"windows"``: consecutive non-overlapping windows covering the whole clip,
    the last one zero-padded.

    Args:
        waveform: (time,) or (channels, time) at ``sample_rate``, float in [-1, 1]
            or integer PCM; checked and converted by :func:`sslam_plugin.waveform.mono_clip`
            (NaN / Inf refused, integers scaled, channels averaged).

    Returns:
        fbank (W, target_length, M) and the clip's frame count.
    """
    if long_clips not in ("crop", "windows"):
        raise ValueError(f"long_clips must be 'crop' or 'windows', got {long_clips!r}")
    wav = mono_clip(waveform, sample_rate)  # (time,) float32
    fbank = compute_fbank(resample_to(wav, sample_rate), frontend)  # (frames, M)
    frames, t = fbank.shape[0], frontend.target_length
    count = max(1, math.ceil(frames / t)) if long_clips == "windows" else 1
    padded = F.pad(fbank[: count * t], (0, 0, 0, max(0, count * t - frames)))  # (W * T, M)
    windows = normalize_fbank(padded, frontend.norm_mean, frontend.norm_std).view(count, t, -1)  # -> (W, T, M)
    return ClipWindows(windows, frames)


def read_clip_windows(path: Union[str, Path], frontend: FbankConfig, long_clips: str = "crop") -> ClipWindows:
    """:func:`clip_windows` of an audio file, decoding no more of it than the windows need.

    ``"crop"``: a clip longer than twice what the first window uses is read
    only that far (plus the resampler's margin, as in training:
    :func:`sslam_plugin.data.robust.crop_read_frames`) and cut after
    resampling; ``num_frames`` is still the whole file's (from its header).
    ``"windows"``: the file is decoded in blocks and each window resampled
    with margins on both sides (:func:`_streamed_windows`), so memory does not
    grow with the file's length beyond the windows themselves. Either way the
    windows equal those of the whole read to float round-off (the fbank
    removes each frame's mean, so the waveform mean taken over a part instead
    of the whole changes nothing else); a clip within one window is read whole.

    Raises:
        AudioLoadError: an unusable file; ValueError: shorter than one analysis window.
    """
    if long_clips not in ("crop", "windows"):
        raise ValueError(f"long_clips must be 'crop' or 'windows', got {long_clips!r}")
    if long_clips == "windows":
        return _streamed_windows(path, frontend)
    keep = crop_samples(frontend)
    header: List[Tuple[int, int]] = []

    def limit(rate: int, frames: int) -> Optional[int]:
        needed = crop_read_frames(keep, rate)
        if frames <= 2 * needed:
            return None
        header.append((rate, frames))
        return needed

    waveform, rate = load_audio(path, limit)
    if not header:
        return clip_windows(waveform, rate, frontend, "crop")
    start = clip_windows(resample_to(waveform, rate)[:keep], SAMPLE_RATE, frontend, "crop")
    whole = _resampled_length(*reversed(header[0]))
    return ClipWindows(start.fbank, 1 + (whole - _window_samples(frontend)) // _shift_samples(frontend))


def _shift_samples(frontend: FbankConfig) -> int:
    return int(SAMPLE_RATE * frontend.frame_shift_ms / 1000)


def _window_samples(frontend: FbankConfig) -> int:
    return int(SAMPLE_RATE * frontend.frame_length_ms / 1000)


def _resampled_length(frames: int, rate: int) -> int:
    """16 kHz samples that resampling ``frames`` samples at ``rate`` gives (:func:`resample_to`)."""
    gcd = math.gcd(rate, SAMPLE_RATE)
    return -(-(SAMPLE_RATE // gcd) * frames // (rate // gcd))


CHUNK_FRAMES = 6000  # about a minute of audio decoded and resampled at a time in windows mode


def _streamed_windows(path: Union[str, Path], frontend: FbankConfig) -> ClipWindows:
    """Consecutive windows of a file decoded block by block (see :func:`read_clip_windows`).

    Chunk k (whole windows, C frames, about a minute) needs the 16 kHz samples
    [a, b), a = k C shift; those come from resampling the input [s0, s1) with a
    margin on both sides wider than the sinc filter, s0 a multiple of the
    rates' period so that the resampler's phases line up with the whole file's.
    """
    shift, size, window = _shift_samples(frontend), _window_samples(frontend), frontend.target_length
    length = window * max(1, CHUNK_FRAMES // window)  # frames per chunk: whole windows, fewer and larger calls
    blocks = audio_blocks(path)
    buffer, rate = next(blocks)  # input samples [start, start + len(buffer))
    start, ended, total16 = 0, False, None
    gcd = math.gcd(rate, SAMPLE_RATE)
    orig, new = rate // gcd, SAMPLE_RATE // gcd
    margin = crop_read_frames(0, rate)  # twice the filter's reach (0 at 16 kHz)
    windows, frames = [], 0
    for k in itertools.count():
        a = k * length * shift
        b = a + (length - 1) * shift + size
        s0 = max(0, (a // new) * orig - margin) // orig * orig
        s1 = -(-b // new) * orig + margin
        parts = [buffer]
        have = start + len(buffer)
        while have < s1 and not ended:
            block = next(blocks, None)
            if block is None:
                ended = True
            else:
                parts.append(block[0])
                have += len(block[0])
        buffer = np.concatenate(parts)[max(0, s0 - start) :] if len(parts) > 1 or s0 > start else buffer
        start = max(start, s0)
        if ended:
            total16 = _resampled_length(start + len(buffer), rate)
            b = min(b, total16)
            if k > 0 and a + size > total16:
                break
        segment = torch.from_numpy(buffer[: s1 - start])
        offset = start // orig * new
        chunk = resample_to(segment, rate)[a - offset : b - offset]
        fbank = compute_fbank(chunk, frontend)  # (<= C, M): frames k C, k C + 1, ...
        frames += fbank.shape[0]
        count = -(-fbank.shape[0] // window)
        padded = F.pad(fbank, (0, 0, 0, count * window - fbank.shape[0]))
        windows.append(normalize_fbank(padded, frontend.norm_mean, frontend.norm_std).view(count, window, -1))
        if ended and b == total16:
            break
    return ClipWindows(torch.cat(windows), frames)


def combine_windows(
    tokens: torch.Tensor,
    num_frames: int,
    granularity: str,
    patch_size: int,
    freq_patches: int,
    frame_shift_ms: float,
    utterance_pooling: str = "cls",
    trim_padding: bool = True,
) -> ClipFeatures:
    """One clip's features from the encoder outputs of its windows.

    Args:
        tokens: (W, 1 + R * F, D) encoder outputs of the clip's W windows, in order.
        num_frames: the clip's real frame count; with ``trim_padding`` the rows
            holding only padding (after the clip's end) are dropped.

    Returns:
        "patch": (sum of rows * F, D); "time": (total rows, D) with timestamps;
        "utterance": (D,), the mean over windows of CLS (or of the kept patch
        tokens for ``utterance_pooling="mean"``); "all": (1 + rows * F, D),
        one window only.
    """
    granularity, utterance_pooling = check_granularity(granularity, utterance_pooling)
    w, s, d = tokens.shape
    rows = (s - 1) // freq_patches
    window_frames = rows * patch_size
    if granularity == "all" and w > 1:
        raise ValueError(
            "granularity 'all' (CLS + patches) is per window; with long_clips='windows' use 'patch', 'time' or 'utterance'"
        )
    if granularity == "utterance" and utterance_pooling == "cls":
        return ClipFeatures(tokens[:, 0].mean(dim=0), None, num_frames)
    grid = tokens[:, 1:].reshape(w, rows, freq_patches, d)  # (W, 1 + R * F, D) -> (W, R, F, D)
    kept = []
    for i in range(w):
        valid = min(window_frames, max(num_frames - i * window_frames, 1))
        kept.append(grid[i, : math.ceil(valid / patch_size)] if trim_padding else grid[i])
    grid = torch.cat(kept, dim=0)  # (total rows, F, D)
    if granularity == "patch":
        return ClipFeatures(grid.reshape(-1, d), None, num_frames)  # -> (rows * F, D)
    if granularity == "utterance":
        return ClipFeatures(grid.reshape(-1, d).mean(dim=0), None, num_frames)
    if granularity == "time":
        return ClipFeatures(grid.mean(dim=1), row_timestamps(grid.shape[0], patch_size, frame_shift_ms), num_frames)
    return ClipFeatures(torch.cat([tokens[0, :1], grid.reshape(-1, d)], dim=0), None, num_frames)  # "all"


def row_timestamps(rows: int, patch_size: int, frame_shift_ms: float) -> torch.Tensor:
    """(rows,) centre of each patch row in seconds: frames [P r, P r + P) at ``frame_shift_ms``."""
    return (torch.arange(rows, dtype=torch.float64) * patch_size + patch_size / 2) * (frame_shift_ms / 1000.0)


def check_granularity(granularity: str, utterance_pooling: str) -> Tuple[str, str]:
    """The granularity's and the pooling's current names (old names are mapped with a warning).

    Raises:
        ValueError: an unknown name (see :mod:`sslam_plugin.vocabulary`).
    """
    return parse_granularity(granularity), parse_pooling(utterance_pooling, "utterance_pooling")
