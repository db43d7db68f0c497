"""Long clips are read only as far as the features look: the same samples and features as a whole read."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from broken_audio import write
from sslam_plugin.data import load_audio
from sslam_plugin.data.manifest import Manifest
from sslam_plugin.data.robust import RobustClipReader, crop_read_frames, crop_samples
from sslam_plugin.augment import RollAndScale
from sslam_plugin.features import FbankConfig, resample_to, waveform_to_features

CFG = FbankConfig(target_length=128)  # 20720 samples at 16 kHz, 1.295 s


def noise(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo noise with a DC offset: (time, 2) float32."""
    rng = np.random.default_rng([seed, rate])
    x = rng.standard_normal(int(rate * seconds)).astype(np.float32) * 0.1 + 0.03
    return np.stack([x, 0.5 * x], axis=1)


def reader_of(path) -> RobustClipReader:
    return RobustClipReader(Manifest(path=path.parent / "t.tsv", root=path.parent, files=[path.name], num_samples=[0]), CFG)


@pytest.mark.parametrize("rate", [16000, 8000, 44100, 96000, 22050])
def test_a_cropped_read_resamples_to_the_whole_reads_samples(tmp_path, rate):
    path = write(tmp_path / f"long_{rate}.wav", noise(rate, 6.0), rate, subtype="FLOAT")
    keep = crop_samples(CFG)
    frames = crop_read_frames(keep, rate)
    whole, _ = load_audio(path)
    part, part_rate = load_audio(path, lambda r, n: crop_read_frames(keep, r))
    assert part_rate == rate and len(part) == frames < len(whole) / 2
    # the margin read past the crop makes the resampled crop the whole file's, bit for bit
    assert torch.equal(resample_to(part, rate)[:keep], resample_to(whole, rate)[:keep])
    # features: equal but for the round-off of removing the crop's mean instead of the file's
    expected = waveform_to_features(whole, rate, CFG)
    got = reader_of(path).features(0)
    assert got.shape == expected.shape == (128, 128)
    assert torch.allclose(got, expected, rtol=0, atol=5e-4)


def test_a_margin_too_small_would_show(tmp_path):
    """The equality above is not automatic: cutting the input at the crop changes the resampled edge."""
    rate = 44100
    path = write(tmp_path / "long.wav", noise(rate, 6.0), rate, subtype="FLOAT")
    keep = crop_samples(CFG)
    whole, _ = load_audio(path)
    tight = whole[: -(-keep * rate // 16000)]
    assert not torch.equal(resample_to(tight, rate)[:keep], resample_to(whole, rate)[:keep])


def test_the_unused_rest_of_a_long_file_is_not_decoded(tmp_path):
    rate = 16000
    data = noise(rate, 6.0)
    data[rate * 5, 0] = np.nan  # at 5 s, far past the 1.3 s crop
    path = write(tmp_path / "tail.wav", data, rate, subtype="FLOAT")
    features = reader_of(path).features(0)
    assert torch.isfinite(features).all()
    with pytest.raises(Exception, match="NaN or Inf"):
        load_audio(path)  # a whole read would have seen it


def test_a_clip_under_twice_the_crop_is_read_whole_and_bit_identical(tmp_path):
    rate = 44100
    path = write(tmp_path / "short.wav", noise(rate, 2.2), rate, subtype="FLOAT")  # 1.7 crops
    whole, _ = load_audio(path)
    assert torch.equal(reader_of(path).features(0), waveform_to_features(whole, rate, CFG))


@pytest.mark.parametrize("fmt, ext", [("OGG", "ogg"), ("MP3", "mp3"), ("FLAC", "flac")])
def test_compressed_formats_read_their_beginning_exactly(tmp_path, fmt, ext):
    """A beginning is read by decoding from the start, never by seeking: exact for every format."""
    rate = 44100 if fmt == "MP3" else 16000
    path = tmp_path / f"long.{ext}"
    sf.write(str(path), noise(rate, 6.0), rate, format=fmt)
    whole, _ = load_audio(path)
    frames = crop_read_frames(crop_samples(CFG), rate)
    part, _ = load_audio(path, frames)
    assert len(part) == frames and torch.equal(part, whole[:frames])
    expected = waveform_to_features(whole, rate, CFG)
    assert torch.allclose(reader_of(path).features(0), expected, rtol=0, atol=5e-4)


def test_a_transform_reads_the_whole_clip(tmp_path):
    """The fine-tuning roll moves the clip's end to its start: it is given the whole waveform."""
    rate = 16000
    path = write(tmp_path / "long.wav", noise(rate, 6.0), rate, subtype="FLOAT")
    lengths = []

    def record(waveform: torch.Tensor) -> torch.Tensor:
        lengths.append(len(waveform))
        return waveform

    reader_of(path).features(0, record)
    assert lengths == [6 * rate]


# ---- the fine-tuning roll: a long clip is read where the rolled crop looks


class FixedRoll(RollAndScale):
    """The roll with chosen draws: a shift as a fraction of the clip, a gain."""

    def __init__(self, fraction: float, gain: float = 1.25):
        super().__init__(lambda: None)
        self.fraction, self.gain, self.drawn = fraction, gain, []

    def draw(self, num_samples):
        self.drawn.append(num_samples)
        return int(self.fraction * (num_samples - 1)), self.gain

    def __call__(self, waveform):
        shift, gain = self.draw(waveform.numel())
        return torch.roll(waveform, shift) * gain


def rolled_reference(path, roll: RollAndScale):
    """What the official roll does: the whole clip decoded, resampled, rolled, scaled, then cropped."""
    whole, rate = load_audio(path)
    return waveform_to_features(whole, rate, CFG, roll), resample_to(whole, rate)


@pytest.mark.parametrize("rate", [16000, 44100, 8000])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.999])  # 0.999: the shift is shorter than the crop (two ranges)
def test_a_rolled_long_clip_reads_only_the_crop_and_gives_the_whole_reads_samples(tmp_path, monkeypatch, rate, fraction):
    import sslam_plugin.data.rolled_crop as rolled_crop

    path = write(tmp_path / f"long_{rate}.flac", noise(rate, 8.0), rate, subtype="PCM_24")
    keep = crop_samples(CFG)
    expected, whole16 = rolled_reference(path, FixedRoll(fraction))
    shift = int(fraction * (len(whole16) - 1))
    read = []
    real = rolled_crop.load_audio_ranges

    def spy(p, choose):
        pieces, r = real(p, choose)
        read.append(sum(len(x) for x in pieces))
        return pieces, r

    monkeypatch.setattr(rolled_crop, "load_audio_ranges", spy)
    roll = FixedRoll(fraction)
    waveform, got_rate, transform = rolled_crop.read_rolled(path, keep, roll)
    assert roll.drawn == [len(whole16)]  # drawn from the resampled length, as the whole read's roll is
    assert got_rate == 16000 and read[0] < 8.0 * rate / 3
    # the kept samples, unrolled into place, are the whole read's, bit for bit
    assert torch.equal(waveform, torch.roll(whole16, shift)[:keep])
    assert torch.equal(transform(waveform), waveform * 1.25)
    got = RobustClipReader(reader_of(path).manifest, CFG).features(0, FixedRoll(fraction))
    assert torch.allclose(got, expected, rtol=0, atol=5e-4)


def test_a_rolled_clip_that_cannot_seek_exactly_is_read_whole(tmp_path):
    rate = 16000
    path = tmp_path / "long.ogg"
    sf.write(str(path), noise(rate, 8.0), rate, format="OGG", subtype="VORBIS")
    expected, _ = rolled_reference(path, FixedRoll(0.5))
    assert torch.equal(reader_of(path).features(0, FixedRoll(0.5)), expected)


def test_a_rolled_short_clip_is_the_whole_reads_roll(tmp_path):
    rate = 44100
    path = write(tmp_path / "short.wav", noise(rate, 2.0), rate, subtype="FLOAT")
    expected, _ = rolled_reference(path, FixedRoll(0.3))
    assert torch.equal(reader_of(path).features(0, FixedRoll(0.3)), expected)


def test_the_roll_draws_as_the_official_augmentation():
    from sslam_plugin.augment import roll_and_scale

    x = torch.randn(1000)
    roll = RollAndScale(lambda: np.random.default_rng(7))
    assert torch.equal(roll(x), roll_and_scale(x, np.random.default_rng(7)))
    shift, gain = roll.draw(1000)
    assert torch.equal(roll(x), torch.roll(x, shift) * gain)
