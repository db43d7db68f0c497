"""Long files in sslam-extract / sslam-infer: only what is used is decoded, and the features equal the whole read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import sslam_plugin.clips as clips
from sslam_plugin.clips import clip_windows, read_clip_windows
from sslam_plugin.data import load_audio
from sslam_plugin.data.robust import crop_read_frames, crop_samples
from sslam_plugin.features import FbankConfig
from sslam_plugin.inference import load_encoder

from export_helpers import tiny_pretraining_checkpoint

MINUTES = 3.1  # a few minutes, not a whole number of windows
# the partial reads differ from the whole read only by the float round-off of the removed mean and of the
# resampler's sums (normalised features are of order 1); a resampling margin too narrow by a few samples
# gives differences of order 1e-2 at the window edges
FEATURE_TOLERANCE = 3e-4


def write_long(path: Path, rate: int) -> Path:
    """Stereo tone + noise with a DC offset (so the mean removal matters), ``MINUTES`` long."""
    rng = np.random.default_rng(rate)
    t = np.arange(int(MINUTES * 60 * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(0.05 * t)) * t) + 0.05 * rng.standard_normal(t.size) + 0.1
    right = 0.2 * np.sin(2 * np.pi * 1234.5 * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(str(path), np.stack([left, right], axis=1).astype(np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module", params=[16000, 44100], ids=["16k", "44k1"])
def long_file(request, tmp_path_factory) -> Path:
    return write_long(tmp_path_factory.mktemp("long") / f"long_{request.param}.wav", request.param)


@pytest.mark.parametrize("target_length", [128, 1024])
@pytest.mark.parametrize("mode", ["crop", "windows"])
def test_partial_read_equals_the_whole_read(long_file, mode, target_length):
    frontend = FbankConfig(target_length=target_length)
    waveform, rate = load_audio(long_file)
    whole = clip_windows(waveform, rate, frontend, mode)
    part = read_clip_windows(long_file, frontend, mode)
    assert part.num_frames == whole.num_frames  # the whole file's frame count, also when cropped
    assert part.fbank.shape == whole.fbank.shape
    assert whole.fbank.shape[0] == (1 if mode == "crop" else -(-whole.num_frames // target_length))
    torch.testing.assert_close(part.fbank, whole.fbank, atol=FEATURE_TOLERANCE, rtol=0)


def test_crop_decodes_only_the_start(long_file, monkeypatch):
    frontend = FbankConfig(target_length=1024)
    decoded = []
    real = clips.load_audio

    def spy(path, max_frames=None):
        waveform, rate = real(path, max_frames)
        decoded.append((waveform.numel(), rate))
        return waveform, rate

    monkeypatch.setattr(clips, "load_audio", spy)
    read_clip_windows(long_file, frontend, "crop")
    (samples, rate), = decoded
    assert samples == crop_read_frames(crop_samples(frontend), rate)
    assert samples < sf.info(str(long_file)).frames / 10


def test_windows_never_resample_the_whole_file(long_file, monkeypatch):
    """Each window is resampled from a bounded stretch: peak memory does not grow with the file."""
    frontend = FbankConfig(target_length=128)
    lengths = []
    real = clips.resample_to

    def spy(waveform, rate):
        lengths.append(waveform.shape[-1])
        return real(waveform, rate)

    monkeypatch.setattr(clips, "resample_to", spy)
    windows = read_clip_windows(long_file, frontend, "windows")
    rate = sf.info(str(long_file)).samplerate
    per_chunk = clips.CHUNK_FRAMES // 128  # whole windows resampled together
    assert windows.fbank.shape[0] > 2 * per_chunk
    assert len(lengths) == -(-windows.fbank.shape[0] // per_chunk)
    chunk = FbankConfig(target_length=128 * per_chunk)
    assert max(lengths) <= crop_read_frames(crop_samples(chunk), rate) + 2 * crop_read_frames(0, rate) + rate // 100


def test_streamed_windows_name_a_bad_file(tmp_path):
    from sslam_plugin.data import AudioLoadError

    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioLoadError, match="bad.wav: cannot decode audio"):
        read_clip_windows(bad, FbankConfig(), "windows")
    short = tmp_path / "short.wav"
    sf.write(str(short), np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match="at least 400"):
        read_clip_windows(short, FbankConfig(), "windows")


def installed(command: str) -> str:
    path = Path(sys.executable).with_name(command)
    assert path.is_file(), f"{path} missing: install the package (make venv) to test the command"
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(tiny_pretraining_checkpoint(target_length=128), path)  # 1.28 s windows: many of them
    return path


@pytest.mark.parametrize("mode", ["crop", "windows"])
def test_sslam_extract_on_a_long_file_equals_the_whole_read(long_file, checkpoint, mode, tmp_path):
    out = tmp_path / "out"
    command = [installed("sslam-extract"), str(checkpoint), str(long_file), str(out), "--long-clips", mode,
               "--granularity", "time", "--device", "cpu", "--num-workers", "0", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    got = np.load(out / f"{long_file.stem}.npy")
    model = load_encoder(checkpoint)
    waveform, rate = load_audio(long_file)
    (expected,) = model.extract_clips([waveform], [rate], "time", long_clips=mode)
    assert got.shape == tuple(expected.features.shape)
    assert got.shape[0] == (8 if mode == "crop" else -(-expected.num_frames // 16))  # rows of 16 frames
    np.testing.assert_allclose(got, expected.features.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.load(out / f"{long_file.stem}.timestamps.npy"), expected.timestamps.numpy())
