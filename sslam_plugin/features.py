"""Log-mel filterbank front end shared by pre-training, fine-tuning and inference.

The recipe is the one the public EAT/SSLAM code uses (and official checkpoints
expect): Kaldi-compatible 128-bin fbank at 16 kHz, 25 ms Hann windows every
10 ms, no dither; zero-padded at the end or cropped from the start to
``target_length`` frames; then normalised as ``(x - mean) / (2 * std)``.

Dimensions: T = frames, M = mel bins (128).
"""

from __future__ import annotations

import functools
import math

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Optional

import torch
import torchaudio

__all__ = [
    "AUDIOSET_MEAN",
    "AUDIOSET_STD",
    "SAMPLE_RATE",
    "FbankSettings",
    "FbankConfig",
    "fbank_config_from",
    "compute_fbank",
    "kaldi_fbank",
    "pad_or_crop",
    "normalize_fbank",
    "waveform_to_features",
    "resample_to",
    "WaveformTransform",
]

SAMPLE_RATE = 16000
AUDIOSET_MEAN = -4.268
AUDIOSET_STD = 4.569

# (time,) zero-mean 16 kHz float32 waveform -> (time',) waveform, e.g. a training augmentation
WaveformTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FbankSettings:
    """The front-end settings a training task exposes as ``task.*``.

    Declared here only: both task configs inherit them (``task.target_length``,
    ``task.num_mel_bins``, ``task.norm_mean``, ``task.norm_std``), and
    :func:`fbank_config_from` turns such a config back into an :class:`FbankConfig`.
    """

    target_length: int = field(
        default=1024, metadata={"help": "frames per clip: zero-padded at the end or cropped from the start"}
    )
    num_mel_bins: int = field(default=128, metadata={"help": "mel bins"})
    norm_mean: float = field(
        default=AUDIOSET_MEAN, metadata={"help": "log-mel mean of the data (sslam-norm-stats computes it)"}
    )
    norm_std: float = field(
        default=AUDIOSET_STD, metadata={"help": "log-mel std of the data; inputs become (x - mean) / (2 std)"}
    )


@dataclass
class FbankConfig(FbankSettings):
    """How a waveform becomes a normalised (T, M) log-mel image."""

    frame_shift_ms: float = field(default=10.0, metadata={"help": "hop between analysis windows"})
    frame_length_ms: float = field(default=25.0, metadata={"help": "analysis window length"})

    def __post_init__(self) -> None:
        if self.target_length <= 0:
            raise ValueError(f"target_length must be positive, got {self.target_length}")
        if self.norm_std <= 0:
            raise ValueError(f"norm_std must be positive, got {self.norm_std}")


def fbank_config_from(settings: Any) -> FbankConfig:
    """The :class:`FbankConfig` of a config holding the :class:`FbankSettings` fields (a task's ``cfg``)."""
    return FbankConfig(**{f.name: getattr(settings, f.name) for f in fields(FbankSettings)})


class _BlockResampler:
    """torchaudio's windowed-sinc resampling (default filter) as one matrix product.

    ``torchaudio.functional.resample`` is a strided ``conv1d`` with one output
    channel per output phase; for the common ratios (32 or 48 kHz to 16 kHz:
    one phase) that convolution runs at a fraction of the CPU's speed and costs
    as much as the fbank. Grouping ``group`` consecutive filter positions into
    one row of a banded matrix turns it into a dense product over overlapping
    input windows: the same taps and sums, about three times faster at 2:1
    (equal to torchaudio's to float round-off, tests/test_features.py).
    """

    def __init__(self, sample_rate: int, target_rate: int) -> None:
        reference = torchaudio.transforms.Resample(sample_rate, target_rate)
        gcd = math.gcd(sample_rate, target_rate)
        self.orig, self.new = sample_rate // gcd, target_rate // gcd
        kernel = reference.kernel[:, 0, :].float()  # (new phases, taps)
        self.taps = kernel.shape[1]
        self.width = int(reference.width)
        self.group = max(1, -(-64 // self.new))  # enough outputs per row for a dense product
        self.window = (self.group - 1) * self.orig + self.taps
        banded = torch.zeros(self.window, self.group * self.new)
        for j in range(self.group):
            banded[j * self.orig : j * self.orig + self.taps, j * self.new : (j + 1) * self.new] = kernel.t()
        self.banded = banded

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape
        wav = waveform.reshape(-1, shape[-1])
        length = shape[-1]
        positions = (length + 2 * self.width + self.orig - self.taps) // self.orig + 1
        rows = -(-positions // self.group)
        needed = (rows - 1) * self.group * self.orig + self.window
        padded = torch.nn.functional.pad(wav, (self.width, needed - length - self.width)).contiguous()
        windows = padded.as_strided(
            (wav.shape[0], rows, self.window), (padded.stride(0), self.group * self.orig, 1)
        )
        out = (windows @ self.banded.to(padded.device)).reshape(wav.shape[0], -1)
        target = -(-self.new * length // self.orig)
        return out[:, :target].reshape(*shape[:-1], target)


@functools.lru_cache(maxsize=16)
def _resampler(sample_rate: int, target_rate: int) -> _BlockResampler:
    # built once per pair of rates: a data worker sees a handful of them
    return _BlockResampler(sample_rate, target_rate)


def resample_to(waveform: torch.Tensor, sample_rate: int, target_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample a (time,) or (channels, time) waveform to ``target_rate`` (float32 out).

    The same band-limited sinc interpolation as ``torchaudio.functional.resample``
    (default filter), with the filter built once per pair of rates and applied as
    one matrix product (:class:`_BlockResampler`).
    """
    if sample_rate == target_rate:
        return waveform
    return _resampler(int(sample_rate), int(target_rate))(waveform.float())


def compute_fbank(
    waveform: torch.Tensor, cfg: Optional[FbankConfig] = None, transform: Optional[WaveformTransform] = None
) -> torch.Tensor:
    """Kaldi log-mel filterbank of a 16 kHz mono waveform.

    Args:
        waveform: (time,) float waveform at 16 kHz. Its mean is removed here.
        transform: applied to the zero-mean waveform, whose output goes to the
            filterbank as it is: where and how the official fine-tuning rolls and
            scales training clips.

    Returns:
        (frames, num_mel_bins) float32 log-mel energies, neither padded nor normalised.
    """
    cfg = cfg if cfg is not None else FbankConfig()
    _check_waveform(waveform, cfg)
    wav = waveform.float()
    wav = wav - wav.mean()
    if transform is not None:
        wav = transform(wav)
        _check_waveform(wav, cfg)
    return kaldi_fbank(wav, cfg.num_mel_bins, cfg.frame_length_ms, cfg.frame_shift_ms)


def _check_waveform(waveform: torch.Tensor, cfg: FbankConfig) -> None:
    """Raise ValueError unless ``waveform`` is (time,) with at least one analysis window."""
    if waveform.dim() != 1:
        raise ValueError(f"expected a mono (time,) waveform, got shape {tuple(waveform.shape)}")
    min_samples = int(SAMPLE_RATE * cfg.frame_length_ms / 1000)
    if waveform.numel() < min_samples:
        raise ValueError(
            f"waveform has {waveform.numel()} samples; at least {min_samples} "
            f"({cfg.frame_length_ms} ms at {SAMPLE_RATE} Hz) are needed for one frame"
        )


@functools.lru_cache(maxsize=8)
def _fbank_constants(num_mel_bins: int, window_size: int, fft_size: int) -> tuple:
    """The Hann window of ``torchaudio.compliance.kaldi.fbank`` and its mel matrix, (bins, mels)."""
    window = torch.hann_window(window_size, periodic=False)
    mel, _ = torchaudio.compliance.kaldi.get_mel_banks(
        num_mel_bins, fft_size, float(SAMPLE_RATE), 20.0, 0.0, 100.0, -500.0, 1.0
    )
    mel = torch.nn.functional.pad(mel.float(), (0, 1))  # no weight on the Nyquist bin
    return window, mel.t().contiguous()


def kaldi_fbank(
    waveform: torch.Tensor, num_mel_bins: int = 128, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
) -> torch.Tensor:
    """``torchaudio.compliance.kaldi.fbank`` with this front end's arguments, about twice as fast.

    Same steps and order: frames of ``frame_length_ms`` every ``frame_shift_ms``
    (edges snipped), per-frame DC removal, pre-emphasis 0.97, Hann window,
    zero-padded FFT, power spectrum, HTK mel banks, log floored at float32 eps.
    It skips what these arguments make unused (the raw log energy torchaudio
    always computes), keeps the window and the mel matrix between calls, and
    takes the power as re^2 + im^2 instead of squaring ``|z|`` (a hypot);
    it equals torchaudio's to float round-off (tests/test_features.py).

    Args:
        waveform: (time,) float32 at 16 kHz (dither 0, so no randomness).

    Returns:
        (frames, num_mel_bins) log-mel energies.
    """
    window_size = int(SAMPLE_RATE * frame_length_ms * 0.001)
    shift = int(SAMPLE_RATE * frame_shift_ms * 0.001)
    fft_size = 1 << (window_size - 1).bit_length()
    window, mel_t = _fbank_constants(num_mel_bins, window_size, fft_size)
    num_frames = 1 + (waveform.numel() - window_size) // shift
    wav = waveform.contiguous()
    frames = wav.as_strided((num_frames, window_size), (shift * wav.stride(0), wav.stride(0)))
    frames = frames - frames.mean(dim=1, keepdim=True)
    padded = frames.new_zeros(num_frames, fft_size)  # the FFT's zero padding, written once
    emphasised = padded[:, :window_size]
    # x[t] - 0.97 * x[t-1], Kaldi repeating sample 0; multiplied then subtracted as torchaudio does
    # (a fused x - alpha * y rounds differently, which the FFT turns into 1e-4 in quiet bins)
    previous = frames[:, :-1] * 0.97
    torch.sub(frames[:, 1:], previous, out=emphasised[:, 1:])
    torch.sub(frames[:, :1], frames[:, :1] * 0.97, out=emphasised[:, :1])
    emphasised.mul_(window)
    squares = torch.view_as_real(torch.fft.rfft(padded)).square()  # (frames, bins, 2)
    # re^2 + im^2 as one strided add: a reduction over a last axis of 2, or |z| (a hypot) squared,
    # costs more than the FFT
    power = squares[..., 0] + squares[..., 1]
    energies = torch.mm(power, mel_t)
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()


def pad_or_crop(fbank: torch.Tensor, target_length: int) -> torch.Tensor:
    """Zero-pad at the end or crop from the start to ``target_length`` frames.

    Args:
        fbank: (frames, mels).

    Returns:
        (target_length, mels).
    """
    frames = fbank.shape[0]
    if frames < target_length:
        return torch.nn.functional.pad(fbank, (0, 0, 0, target_length - frames))
    return fbank[:target_length]


def normalize_fbank(fbank: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """``(x - mean) / (2 * std)``, the AST/EAT convention (padding is normalised too)."""
    return (fbank - mean) / (2.0 * std)


def waveform_to_features(
    waveform: torch.Tensor,
    sample_rate: int,
    cfg: Optional[FbankConfig] = None,
    transform: Optional[WaveformTransform] = None,
) -> torch.Tensor:
    """Full front end: resample, fbank (with ``transform``, see :func:`compute_fbank`), pad/crop, normalise.

    Args:
        waveform: (time,) mono waveform at ``sample_rate``.

    Returns:
        (cfg.target_length, cfg.num_mel_bins) normalised log-mel features.
    """
    cfg = cfg if cfg is not None else FbankConfig()
    fbank = compute_fbank(resample_to(waveform, sample_rate), cfg, transform)
    fbank = pad_or_crop(fbank, cfg.target_length)
    return normalize_fbank(fbank, cfg.norm_mean, cfg.norm_std)
