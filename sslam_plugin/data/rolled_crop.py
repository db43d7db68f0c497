"""Reading only what a rolled crop keeps: the fine-tuning roll of a long clip without decoding all of it.

The official fine-tuning rolls a training clip's whole 16 kHz waveform by a
random shift ``k`` and keeps its first ``keep`` samples for the fbank
(:class:`~sslam_plugin.augment.RollAndScale`). Those samples are the whole
clip's ``[N - k, N - k + keep)`` or, when the shift is shorter than the crop,
``[N - k, N)`` followed by ``[0, keep - k)``: at most two ranges, known from the
header's length before anything is decoded. Each range is read with a margin,
resampled and cut, so its samples are the whole read's; only the waveform's
mean differs (taken over what was read), and the fbank removes each frame's DC
offset, so the features agree to float round-off.

Seeking is exact for PCM and FLAC files and for HDF5 clips; Ogg and mp3 clips,
and clips shorter than twice what a read with margins costs, are read whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from ..augment import RollAndScale
from ..features import SAMPLE_RATE, resample_to
from .audio import load_audio_ranges
from .manifest import samples_at_16k

__all__ = ["read_rolled", "resampling_margin", "samples_for_16k_range"]

Transform = Callable[[torch.Tensor], torch.Tensor]


def resampling_margin(sample_rate: int) -> Tuple[int, int, int]:
    """(orig, new, margin): the reduced rate ratio ``sample_rate : 16000`` and the input samples to read
    past a range's ends so that cutting the input does not touch the range's resampled outputs.

    The resampler's output ``t`` depends on the inputs within its sinc filter around
    ``t * orig / new`` (:mod:`sslam_plugin.features`: 6 zero crossings of the lower rate on each
    side); the margin is twice that plus one period.
    """
    gcd = math.gcd(sample_rate, SAMPLE_RATE)
    orig, new = sample_rate // gcd, SAMPLE_RATE // gcd
    filter_width = math.ceil(6 * orig / (0.99 * min(orig, new)))  # torchaudio's default sinc filter, in samples
    return orig, new, 2 * (filter_width + orig)


def samples_for_16k_range(start: int, stop: int, sample_rate: int, frames: int) -> Tuple[int, int, int]:
    """(first, last + 1, offset): the input samples whose resampling holds the whole file's 16 kHz samples
    ``[start, stop)`` exactly, and the 16 kHz index of that resampling's first output.

    The first input sample is a multiple of the ratio's period, so the resampled piece's outputs
    fall on the whole file's output grid (``offset`` = first / orig * new).
    """
    if sample_rate == SAMPLE_RATE:
        return start, stop, start
    orig, new, margin = resampling_margin(sample_rate)
    first = max(0, start * orig // new - margin) // orig * orig
    last = min(frames, -(-stop * orig // new) + margin)
    return first, last, first // orig * new


def read_rolled(
    path: Union[str, Path], keep: int, roll: RollAndScale
) -> Tuple[torch.Tensor, int, Optional[Transform]]:
    """(waveform, sample rate, transform) for :func:`~sslam_plugin.features.waveform_to_features` of a rolled clip.

    A long, exactly seekable clip gives the ``keep`` kept 16 kHz samples, unrolled into place,
    with the gain left as the transform; any other clip gives its whole waveform with ``roll``.
    Raises AudioLoadError as :func:`~sslam_plugin.data.audio.load_audio` does.
    """
    plan: List[Tuple[int, int, int]] = []  # per piece: 16 kHz start and stop, its output offset
    gain: List[float] = []

    def choose(rate: int, frames: int, exact_seek: bool) -> Optional[Sequence[Tuple[int, int]]]:
        total = samples_at_16k(frames, rate)  # the resampler's output length: the roll's N
        ranges16 = _kept_ranges(total, keep, roll, gain) if exact_seek and total > keep else None
        if ranges16 is None:
            return None
        reads = [samples_for_16k_range(a, b, rate, frames) for a, b in ranges16]
        if sum(last - first for first, last, _ in reads) * 2 > frames:  # a whole read costs about as much
            return None
        plan.extend((a, b, offset) for (a, b), (_, _, offset) in zip(ranges16, reads))
        return [(first, last) for first, last, _ in reads]

    pieces, sample_rate = load_audio_ranges(path, choose)
    if not plan:
        return pieces[0], sample_rate, roll
    kept = [resample_to(piece, sample_rate)[a - offset : b - offset] for piece, (a, b, offset) in zip(pieces, plan)]
    scale = gain[0]
    return torch.cat(kept), SAMPLE_RATE, lambda waveform: waveform * scale


def _kept_ranges(total: int, keep: int, roll: RollAndScale, gain: List[float]) -> List[Tuple[int, int]]:
    """The whole waveform's ranges that the first ``keep`` samples of its roll hold, in order."""
    shift, scale = roll.draw(total)
    gain.append(scale)
    start = total - shift if shift else 0  # torch.roll by k: output i is input (i - k) mod N
    if start + keep <= total:
        return [(start, start + keep)]
    return [(start, total), (0, keep - (total - start))]
