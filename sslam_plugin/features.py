"""Log-mel filterbank front end shared by pre-training, fine-tuning and inference.

The recipe is the one the public EAT/SSLAM code uses (and official checkpoints
expect): Kaldi-compatible 128-bin fbank at 16 kHz, 25 ms Hann windows every
10 ms, no dither; zero-padded at the end or cropped from the start to
``target_length`` frames; then normalised as ``(x - mean) / (2 * std)``.

Dimensions: T = frames, M = mel bins (128).
"""

from __future__ import annotations

import functools

from dataclasses import dataclass

import torch
import torchaudio

__all__ = [
    "AUDIOSET_MEAN",
    "AUDIOSET_STD",
    "SAMPLE_RATE",
    "FbankConfig",
    "compute_fbank",
    "pad_or_crop",
    "normalize_fbank",
    "waveform_to_features",
    "resample_to",
]

SAMPLE_RATE = 16000
AUDIOSET_MEAN = -4.268
AUDIOSET_STD = 4.569


@dataclass(frozen=True)
class FbankConfig:
    """How a waveform becomes a normalised (T, M) log-mel image."""

    target_length: int = 1024
    num_mel_bins: int = 128
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    norm_mean: float = AUDIOSET_MEAN
    norm_std: float = AUDIOSET_STD

    def __post_init__(self) -> None:
        if self.target_length <= 0:
            raise ValueError(f"target_length must be positive, got {self.target_length}")
        if self.norm_std <= 0:
            raise ValueError(f"norm_std must be positive, got {self.norm_std}")


@functools.lru_cache(maxsize=16)
def _resampler(sample_rate: int, target_rate: int) -> torchaudio.transforms.Resample:
    # torchaudio.functional.resample rebuilds its windowed-sinc kernel on every call, which costs
    # as much as the filtering itself for a 10 s clip; a data worker sees a handful of rates.
    return torchaudio.transforms.Resample(sample_rate, target_rate)


def resample_to(waveform: torch.Tensor, sample_rate: int, target_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample a (time,) or (channels, time) waveform to ``target_rate`` (float32 out).

    The same band-limited sinc interpolation as ``torchaudio.functional.resample``
    (default filter), with the kernel built once per pair of rates.
    """
    if sample_rate == target_rate:
        return waveform
    return _resampler(int(sample_rate), int(target_rate))(waveform.float())


def compute_fbank(waveform: torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """Kaldi log-mel filterbank of a 16 kHz mono waveform.

    Args:
        waveform: (time,) float waveform at 16 kHz. Its mean is removed here.

    Returns:
        (frames, num_mel_bins) float32 log-mel energies, neither padded nor normalised.
    """
    if waveform.dim() != 1:
        raise ValueError(f"expected a mono (time,) waveform, got shape {tuple(waveform.shape)}")
    min_samples = int(SAMPLE_RATE * cfg.frame_length_ms / 1000)
    if waveform.numel() < min_samples:
        raise ValueError(
            f"waveform has {waveform.numel()} samples; at least {min_samples} "
            f"({cfg.frame_length_ms} ms at {SAMPLE_RATE} Hz) are needed for one frame"
        )
    wav = waveform.float()
    wav = wav - wav.mean()
    return torchaudio.compliance.kaldi.fbank(
        wav.unsqueeze(0),  # (1, time): kaldi wants a channel axis
        htk_compat=True,
        sample_frequency=SAMPLE_RATE,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=cfg.num_mel_bins,
        dither=0.0,
        frame_shift=cfg.frame_shift_ms,
        frame_length=cfg.frame_length_ms,
    )


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
    waveform: torch.Tensor, sample_rate: int, cfg: FbankConfig = FbankConfig()
) -> torch.Tensor:
    """Full front end: resample, fbank, pad/crop, normalise.

    Args:
        waveform: (time,) mono waveform at ``sample_rate``.

    Returns:
        (cfg.target_length, cfg.num_mel_bins) normalised log-mel features.
    """
    wav = resample_to(waveform, sample_rate)
    fbank = compute_fbank(wav, cfg)
    fbank = pad_or_crop(fbank, cfg.target_length)
    return normalize_fbank(fbank, cfg.norm_mean, cfg.norm_std)
