import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from sslam_plugin.data import AudioLoadError, load_audio
from sslam_plugin.features import (
    FbankConfig,
    compute_fbank,
    kaldi_fbank,
    normalize_fbank,
    pad_or_crop,
    resample_to,
    waveform_to_features,
)


@pytest.mark.parametrize("clip", ["clip_16k_6s", "clip_32k_11s"])
def test_fbank_matches_golden(golden_dir, clip):
    waveform, rate = load_audio(golden_dir / f"{clip}.wav")
    ours = waveform_to_features(waveform, rate).numpy()
    ref = np.load(golden_dir / f"{clip}.fbank.npy")
    assert ours.shape == ref.shape == (1024, 128)
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize("samples", [400, 401, 559, 16000, 163840])
@pytest.mark.parametrize("scale", [0.0, 1e-6, 0.1, 1.0])
def test_kaldi_fbank_equals_torchaudio(samples, scale):
    """The fast path against torchaudio's Kaldi fbank with the same arguments, quiet bins included."""
    generator = torch.Generator().manual_seed(samples)
    wav = torch.randn(samples, generator=generator) * scale
    wav = wav - wav.mean()
    reference = torchaudio.compliance.kaldi.fbank(
        wav[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25,
    )
    ours = kaldi_fbank(wav)
    assert ours.shape == reference.shape == (1 + (samples - 400) // 160, 128)
    assert torch.allclose(ours, reference, rtol=0, atol=5e-6), (ours - reference).abs().max()


def test_kaldi_fbank_other_mel_counts_and_a_strided_input():
    wav = torch.randn(2, 8000).t()[:, 0]  # a non-contiguous view
    reference = torchaudio.compliance.kaldi.fbank(
        wav.contiguous()[None], htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=64, dither=0.0, frame_shift=10, frame_length=25,
    )
    assert torch.allclose(kaldi_fbank(wav, num_mel_bins=64), reference, rtol=0, atol=5e-6)


def test_pad_then_normalise_and_crop_from_start():
    fbank = torch.arange(12.0).reshape(6, 2)
    padded = pad_or_crop(fbank, 8)
    assert torch.equal(padded[:6], fbank) and torch.equal(padded[6:], torch.zeros(2, 2))
    assert torch.equal(pad_or_crop(fbank, 4), fbank[:4])
    # padding is zero *before* normalisation, so it becomes -mean / (2 std)
    normed = normalize_fbank(padded, mean=-4.0, std=2.0)
    assert torch.allclose(normed[7], torch.full((2,), 1.0))
    assert torch.allclose(normed[0], (fbank[0] + 4.0) / 4.0)


def test_frames_follow_the_10ms_shift():
    wav = torch.randn(16000)  # 1 s: (16000 - 400) // 160 + 1 frames
    assert compute_fbank(wav).shape == (98, 128)


@pytest.mark.parametrize("rate", [8000, 22050, 32000, 44100, 48000])
@pytest.mark.parametrize("samples", [1, 317, 24001])
def test_resample_equals_torchaudio(rate, samples):
    """The banded-matrix resampler against torchaudio's conv1d, mono and (channels, time)."""
    generator = torch.Generator().manual_seed(rate + samples)
    wav = torch.randn(2, samples, generator=generator) * 0.3
    reference = torchaudio.functional.resample(wav, rate, 16000)
    ours = resample_to(wav, rate)
    # the same sums in another order: at ratios with hundreds of taps (44.1 and 22.05 kHz)
    # torchaudio's own Resample transform and resample function differ by 1e-5 too
    atol = 1e-6 if rate % 16000 == 0 or 16000 % rate == 0 else 5e-5
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, rtol=0, atol=atol), (ours - reference).abs().max()
    assert torch.allclose(resample_to(wav[0], rate), reference[0], rtol=0, atol=atol)


def test_resampling_matches_native_rate():
    t = np.arange(32000 * 2) / 32000.0
    tone32 = torch.from_numpy(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    t16 = np.arange(16000 * 2) / 16000.0
    tone16 = torch.from_numpy(np.sin(2 * np.pi * 440 * t16).astype(np.float32))
    cfg = FbankConfig(target_length=192)
    a, b = waveform_to_features(tone32, 32000, cfg), waveform_to_features(tone16, 16000, cfg)
    # the 440 Hz tone lands in the same mel bin at either rate
    assert a[20:180].mean(0).argmax() == b[20:180].mean(0).argmax()


def test_too_short_waveform_is_rejected():
    with pytest.raises(ValueError, match="at least 400"):
        compute_fbank(torch.zeros(100))


def test_stereo_is_averaged(tmp_path):
    left = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    sf.write(tmp_path / "s.wav", np.stack([left, -left * 0.5], axis=1), 16000, subtype="FLOAT")
    wav, rate = load_audio(tmp_path / "s.wav")
    assert rate == 16000
    assert np.allclose(wav.numpy(), left * 0.25, atol=1e-6)


def test_bad_files_raise_audio_load_error(tmp_path):
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioLoadError, match="garbage.wav: cannot decode"):
        load_audio(tmp_path / "garbage.wav")
    with pytest.raises(AudioLoadError, match="missing.wav: file not found"):
        load_audio(tmp_path / "missing.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="NaN or Inf"):
        load_audio(tmp_path / "nan.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioLoadError, match="no samples"):
        load_audio(tmp_path / "empty.wav")
