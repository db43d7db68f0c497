"""Bad waveform input never becomes features silently: NaN/Inf, integer PCM, channels, layouts, long clips."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from sslam_plugin import waveform as waveform_module
from sslam_plugin.checkpoints import export_from_checkpoint
from sslam_plugin.inference import PretrainedAudioEncoder, WaveformError
from sslam_plugin.waveform import batch_clips, mono_clip, to_float

from export_helpers import finetuned_checkpoint, load_official, script, tiny_pretraining_checkpoint, write_wav

RATE = 16000


@pytest.fixture(scope="module")
def encoder():
    """Width 32, a 128-frame (1.28 s) window."""
    return PretrainedAudioEncoder.from_export(export_from_checkpoint(tiny_pretraining_checkpoint(target_length=128)))


def fresh_encoder():
    return PretrainedAudioEncoder.from_export(export_from_checkpoint(tiny_pretraining_checkpoint(target_length=128)))


def noise(*shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) * 1.6 - 0.8).float()


# ------------------------------------------------------------ NaN and Inf
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_samples_raise(encoder, bad):
    assert issubclass(WaveformError, ValueError)  # callers catching ValueError keep working
    clip = noise(8000)
    clip[1234] = bad
    with pytest.raises(WaveformError, match=r"1 NaN or Inf samples \(first at index 1234\)"):
        encoder(clip, RATE)
    batch = noise(3, 8000)
    batch[2, 777] = bad
    with pytest.raises(WaveformError, match=r"first at index \(2, 777\)"):
        encoder.extract_features(batch, RATE, "utterance")
    with pytest.raises(WaveformError, match="clip 1 holds 1 NaN or Inf"):
        encoder([noise(8000), clip], RATE)
    with pytest.raises(WaveformError, match="clip 1 holds 1 NaN or Inf"):
        encoder.extract_clips([noise(8000), clip.numpy()], RATE, "time", "windows")
    fbank = encoder.fbank(noise(8000), RATE)
    fbank[0, 3, 5] = bad
    with pytest.raises(WaveformError, match="fbank input holds 1 NaN or Inf"):
        encoder(fbank)


def test_empty_clip_is_refused(encoder):
    with pytest.raises(WaveformError, match="no samples"):
        encoder(torch.zeros(0), RATE)
    with pytest.raises(WaveformError, match="clip 0 holds no samples"):
        encoder.extract_clips([np.zeros((2, 0), dtype=np.float32)], RATE)


# ------------------------------------------------------------- integer PCM
def test_integer_pcm_is_scaled_like_a_decoder():
    int16 = torch.tensor([-32768, 0, 16384, 32767], dtype=torch.int16)
    assert to_float(int16).tolist() == [-1.0, 0.0, 0.5, 32767 / 32768]
    assert to_float(torch.tensor([-(2**31), 2**30], dtype=torch.int32)).tolist() == [-1.0, 0.5]
    assert to_float(np.array([0, 128, 192, 255], dtype=np.uint8)).tolist() == [-1.0, 0.0, 0.5, 127 / 128]
    assert to_float(np.array([-128, 64], dtype=np.int8)).tolist() == [-1.0, 0.5]
    assert to_float(np.array([0.25], dtype=">f4")).tolist() == [0.25]  # big-endian arrays are read too


def test_integer_pcm_gives_the_features_of_its_float_audio(encoder, tmp_path):
    q16 = (noise(2, 12000, seed=3) * 32767).round().to(torch.int16)  # (2, time) int16
    as_float = q16.double().div(32768).float()
    expected = encoder(as_float, RATE)
    assert torch.equal(encoder(q16, RATE), expected)
    assert torch.equal(encoder(q16.numpy(), RATE), expected)
    assert torch.equal(encoder(q16.to(torch.int32) * 65536, RATE), expected)  # 24/32-bit PCM as int32
    # 8-bit: the top byte of each int16 sample
    top = torch.div(q16, 256, rounding_mode="floor")  # in [-128, 127]
    expected8 = encoder(top.double().div(128).float(), RATE)
    assert torch.equal(encoder(top.to(torch.int8), RATE), expected8)
    assert torch.equal(encoder((top + 128).to(torch.uint8), RATE), expected8)
    # the same as soundfile's own decoding of a 16-bit WAV
    path = tmp_path / "pcm16.wav"
    sf.write(str(path), q16[0].numpy(), RATE, subtype="PCM_16")
    decoded, _ = sf.read(str(path), dtype="float32")
    assert torch.allclose(encoder(torch.from_numpy(decoded), RATE), expected[:1], atol=1e-6)
    # without scaling the features would be those of audio 32768 times louder
    assert not torch.allclose(encoder(q16.float(), RATE), expected, atol=1e-3)


@pytest.mark.parametrize(
    "data, dtype",
    [(np.array([[1, 2, 3] * 200]), "int64"), (torch.zeros(1, 600, dtype=torch.bool), "bool"),
     (torch.zeros(600, dtype=torch.complex64), "complex64")],
)
def test_samples_without_a_known_scale_are_refused(encoder, data, dtype):
    with pytest.raises(WaveformError, match=f"dtype .*{dtype} have no known scale"):
        encoder(data, RATE)


def test_loud_float_audio_is_logged_once(encoder, caplog, monkeypatch):
    monkeypatch.setattr(waveform_module, "_logged", set())
    q16 = (noise(6000, seed=4) * 32767).round()
    with caplog.at_level(logging.WARNING, logger="sslam_plugin.waveform"):
        encoder(q16 / 32768, RATE)
        assert not caplog.records
        encoder(q16, RATE)
        encoder(q16, RATE)
    [record] = caplog.records
    assert "divided by 32768" in record.getMessage()


# --------------------------------------------------------- channels, shapes
def test_channels_are_averaged_where_the_shape_says_so(encoder):
    stereo = noise(2, 9000, seed=5)  # (C, time): two different channels
    mono = stereo.mean(dim=0)
    expected = encoder(mono, RATE)  # (1, 1 + L, D)
    assert torch.equal(encoder(stereo[None], RATE), expected)  # (1, C, time)
    batch = torch.stack([stereo, stereo.flip(0), stereo])  # (3, C, time)
    out = encoder(batch, RATE)
    assert out.shape[0] == 3 and all(torch.allclose(out[i], expected[0], atol=1e-6) for i in range(3))
    listed = encoder([stereo, mono], RATE)  # a list item (C, time) is one clip
    assert torch.allclose(listed[0], listed[1], atol=1e-6) and torch.allclose(listed[:1], expected, atol=1e-6)
    [clip] = encoder.extract_clips([stereo.numpy()], RATE, "time")
    [ref] = encoder.extract_clips([mono], RATE, "time")
    assert torch.equal(clip.features, ref.features)
    # (N, time) is a batch of mono clips, never one stereo clip: the two rows are encoded apart
    two = encoder(stereo, RATE)
    assert two.shape[0] == 2
    assert torch.allclose(two[:1], encoder(stereo[0], RATE), atol=1e-6)
    assert torch.allclose(two[1:], encoder(stereo[1], RATE), atol=1e-6)
    assert not torch.allclose(two[0], two[1], atol=1e-3)  # the channels differ, so would a mix-up


@pytest.mark.parametrize("shape", [(9000, 2), (1, 9000, 2), (4, 300)])
def test_misplaced_time_axis_is_refused(encoder, shape):
    with pytest.raises(WaveformError, match=r"last axis must be time.*transpose it"):
        encoder(noise(*shape), RATE)


def test_layout_check_follows_the_sample_rate():
    # one 25 ms window is 400 samples at 16 kHz and 1103 at 44.1 kHz
    assert len(batch_clips(noise(2, 400), 16000)) == 2
    with pytest.raises(WaveformError, match=r"fewer than one 25 ms analysis window \(1103 at 44100 Hz\)"):
        batch_clips(noise(2, 1000), 44100)
    with pytest.raises(WaveformError, match="clip 0: expected a"):
        batch_clips([noise(1, 2, 500)], RATE)
    with pytest.raises(WaveformError, match="expected a .* waveform, got shape"):
        batch_clips(noise(1, 1, 2, 500), RATE)
    assert mono_clip(noise(3, 500)).shape == (500,)


# -------------------------------------------------------------- long clips
def test_long_clips_are_logged_once_per_model(caplog):
    model = fresh_encoder()
    long = noise(2 * RATE, seed=6)  # 2 s > the 1.28 s window
    def records():
        return [r for r in caplog.records if r.name == "sslam_plugin.inference"]

    with caplog.at_level(logging.INFO, logger="sslam_plugin.inference"):
        model(long[: RATE // 2], RATE)
        assert not records()  # a short clip says nothing
        cropped = model(long, RATE)
        model.extract_features(long, RATE, "utterance")
        model.extract_clips([long], RATE, "patch", "crop")
        [crop] = records()
        assert crop.levelno == logging.WARNING
        # 2 s: 1 + (32000 - 400) // 160 = 198 frames of 10 ms
        assert "a clip of 198 fbank frames (1.98 s)" in crop.getMessage()
        assert "(128 frames = 1.28 s)" in crop.getMessage() and "cropped to their first 1.28 s" in crop.getMessage()
        model.extract_clips([long], RATE, "time", "windows")
        model.extract_clips([long], RATE, "utterance", "windows")
        [_, windows] = records()
        assert windows.levelno == logging.INFO and "consecutive non-overlapping windows" in windows.getMessage()
        fresh_encoder()(long, RATE)  # another model says it again
        assert len(records()) == 3
    # what the message says is what happens: the first 1.28 s (127 hops + one 400-sample window)
    assert torch.allclose(cropped, model(long[: 127 * 160 + 400], RATE), atol=1e-4)  # fbank rounding ~2e-5


# ------------------------------------------------------------- batch tools
def write_nan_wav(path):
    data = noise(RATE, seed=7).numpy()
    data[100] = np.nan
    sf.write(str(path), data, RATE, subtype="FLOAT")
    return path


def test_extract_features_refuses_bad_clips_by_name_and_goes_on(tmp_path, caplog):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_pretraining_checkpoint(target_length=128), ckpt)
    audio = tmp_path / "audio"
    write_wav(audio / "a.wav", 0.5, seed=1)
    write_wav(audio / "long.wav", 2.0, seed=2)
    nan = write_nan_wav(audio / "nan.wav")
    sf.write(str(audio / "short.wav"), np.zeros(100, dtype=np.float32), RATE)
    out = tmp_path / "out"
    args = [str(ckpt), str(audio), str(out), "--device", "cpu", "--num-workers", "0", "--batch-size", "2"]
    with caplog.at_level(logging.INFO):
        assert script("extract_features").main(args) == 1
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "long.npy"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"skipped {nan}: contains NaN or Inf samples" in errors  # the path once, then the reason
    assert any(e.startswith(f"skipped {audio / 'short.wav'}: waveform has 100 samples") for e in errors)
    assert len(errors) == 2
    crops = [r for r in caplog.records if "cropped to their first 1.28 s" in r.getMessage()]
    assert len(crops) == 1


def test_infer_reports_bad_files_by_name_and_scores_the_rest(golden_dir, tmp_path, capsys, caplog):
    ckpt = tmp_path / "finetuned.pt"
    torch.save(finetuned_checkpoint(load_official(golden_dir), num_classes=5), ckpt)
    nan = write_nan_wav(tmp_path / "nan.wav")
    short = tmp_path / "short.wav"
    sf.write(str(short), np.zeros(100, dtype=np.float32), RATE)
    good = golden_dir / "clip_32k_11s.wav"  # 11 s: longer than the 10.24 s window
    with caplog.at_level(logging.WARNING, logger="sslam_plugin.inference"):
        files = [str(nan), str(good), str(short), str(good)]
        code = script("infer").main([str(ckpt), *files, "--json", "--device", "cpu"])
    assert code == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [item["file"] for item in report] == [str(good), str(good)]
    assert f"error: {nan}: contains NaN or Inf samples" in captured.err
    assert f"error: {short}: waveform has 100 samples" in captured.err
    assert len([r for r in caplog.records if "cropped to their first 10.24 s" in r.getMessage()]) == 1
