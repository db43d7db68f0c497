"""The ready-to-use encoder: granularities, inputs, long clips, classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslam_plugin.data import load_audio
from sslam_plugin.checkpoints import export_from_checkpoint
from sslam_plugin.features import FbankConfig, waveform_to_features
from sslam_plugin.inference import PretrainedAudioEncoder, TimeFeatures, clip_windows, combine_windows

from export_helpers import finetuned_checkpoint, load_official, tiny_pretraining_checkpoint


@pytest.fixture(scope="module")
def official():
    from conftest import GOLDEN, require_reference

    return load_official(require_reference(GOLDEN))


@pytest.fixture(scope="module")
def golden_encoder(official):
    return PretrainedAudioEncoder.from_export(export_from_checkpoint(official))


@pytest.fixture(scope="module")
def clips(golden_dir_module):
    return {name: load_audio(golden_dir_module / f"{name}.wav") for name in ("clip_16k_6s", "clip_32k_11s")}


@pytest.fixture(scope="module")
def golden_dir_module():
    from conftest import GOLDEN, require_reference

    return require_reference(GOLDEN)


@pytest.fixture
def tiny_encoder():
    """A width-32 encoder with a 128-frame front end (no reference material needed)."""
    return PretrainedAudioEncoder.from_export(export_from_checkpoint(tiny_pretraining_checkpoint(target_length=128)))


def test_granularities_agree_with_all(golden_encoder, clips, golden_dir_module):
    waveform, rate = clips["clip_16k_6s"]
    tokens = golden_encoder(waveform, rate)  # (1, 513, 192)
    ref = np.load(golden_dir_module / "clip_16k_6s.features.npy")
    assert np.abs(tokens[0].numpy() - ref).max() < 1e-4
    frame = golden_encoder.extract_features(waveform, rate, "patch")
    assert torch.equal(golden_encoder.extract_features(waveform, rate, "frame"), frame)  # the old name
    utterance = golden_encoder.extract_features(waveform, rate, "utterance")
    mean = golden_encoder.extract_features(waveform, rate, "utterance", utterance_pooling="mean")
    time = golden_encoder.extract_features(waveform, rate, "time")
    assert frame.shape == (1, 512, 192) and torch.equal(frame, tokens[:, 1:])
    assert utterance.shape == (1, 192) and torch.equal(utterance, tokens[:, 0])
    assert torch.allclose(mean, tokens[:, 1:].mean(dim=1))
    assert isinstance(time, TimeFeatures) and time.features.shape == (1, 64, 192)
    # row r averages its 8 frequency patches, patches are time-major
    assert torch.allclose(time.features[0, 5], tokens[0, 1 + 5 * 8 : 1 + 6 * 8].mean(dim=0), atol=1e-6)
    assert time.timestamps.shape == (64,)
    assert time.timestamps[0].item() == pytest.approx(0.08) and time.timestamps[1].item() == pytest.approx(0.24)
    assert time.timestamps[-1].item() == pytest.approx((16 * 63 + 8) * 0.01)


def test_fbank_input_and_batches_match_waveforms(golden_encoder, clips):
    (a, rate_a), (b, rate_b) = clips["clip_16k_6s"], clips["clip_32k_11s"]
    fbank = torch.stack([waveform_to_features(a, rate_a), waveform_to_features(b, rate_b)])  # (2, 1024, 128)
    from_fbank = golden_encoder.extract_features(fbank, granularity="all")
    alone = torch.cat([golden_encoder(a, rate_a), golden_encoder(b, rate_b)])
    assert torch.allclose(from_fbank, alone, atol=1e-5)
    # a list of clips of different lengths and rates is one batch when they share a rate
    b16 = torch.from_numpy(np.interp(np.arange(0, len(b), 2), np.arange(len(b)), b.numpy()).astype(np.float32))
    batch = golden_encoder([a, b16], 16000)
    assert batch.shape == (2, 513, 192)
    assert torch.allclose(batch[0], alone[0], atol=1e-5)
    with pytest.raises(ValueError, match="sample_rate"):
        golden_encoder(a)  # a waveform without its rate is not fbank


def test_long_clips_windows_and_trimming(golden_encoder, clips):
    waveform, rate = clips["clip_32k_11s"]  # 1098 frames > target_length 1024
    windows = clip_windows(waveform, rate, golden_encoder.frontend, "windows")
    assert windows.fbank.shape == (2, 1024, 128) and windows.num_frames == 1098
    crop = clip_windows(waveform, rate, golden_encoder.frontend, "crop")
    assert torch.equal(crop.fbank[0], windows.fbank[0])
    assert torch.equal(crop.fbank[0], waveform_to_features(waveform, rate))
    [long], [cropped] = (golden_encoder.extract_clips([waveform], rate, "time", m) for m in ("windows", "crop"))
    assert long.features.shape == (69, 192)  # ceil(1098 / 16) rows
    assert cropped.features.shape == (64, 192)
    assert torch.allclose(long.features[:64], cropped.features)
    steps = np.diff(long.timestamps.numpy())
    assert np.allclose(steps, 0.16) and long.timestamps[0].item() == pytest.approx(0.08)
    [frames] = golden_encoder.extract_clips([waveform], rate, "patch", "windows")
    assert frames.features.shape == (69 * 8, 192)
    with pytest.raises(ValueError, match="per window"):
        golden_encoder.extract_clips([waveform], rate, "all", "windows")
    # a short clip keeps only the rows with audio, unless asked to keep padding
    short, sr = clips["clip_16k_6s"]  # 648 frames -> 41 rows
    [trimmed] = golden_encoder.extract_clips([short], sr, "patch")
    [padded] = golden_encoder.extract_clips([short], sr, "patch", trim_padding=False)
    assert trimmed.features.shape == (41 * 8, 192) and padded.features.shape == (512, 192)
    assert torch.equal(padded.features, golden_encoder.extract_features(short, sr, "frame")[0])
    [utt] = golden_encoder.extract_clips([short], sr, "utterance")
    assert torch.equal(utt.features, golden_encoder.extract_features(short, sr, "utterance")[0])


def test_combine_windows_utterance_averages_windows():
    tokens = torch.randn(3, 1 + 4 * 2, 5)  # 3 windows of 4 rows x 2 frequency patches
    out = combine_windows(tokens, num_frames=150, granularity="utterance", patch_size=16, freq_patches=2,
                          frame_shift_ms=10.0)
    assert torch.allclose(out.features, tokens[:, 0].mean(dim=0))
    rows = combine_windows(tokens, 150, "time", 16, 2, 10.0)
    assert rows.features.shape == (4 + 4 + 2, 5)  # 150 frames: 64 + 64 + 22 -> 2 rows in the last window
    assert torch.allclose(rows.features[9], tokens[2, 1 + 2 : 1 + 4].mean(dim=0))


def test_tiny_encoder_without_reference(tiny_encoder):
    assert tiny_encoder.frontend == FbankConfig(target_length=128, norm_mean=-5.0, norm_std=4.0)
    waveform = torch.randn(2, 16000)
    assert tiny_encoder(waveform, 16000).shape == (2, 1 + 8 * 8, 32)
    time = tiny_encoder.extract_features(waveform, 16000, "time")
    assert time.features.shape == (2, 8, 32)
    with pytest.raises(ValueError, match="granularity"):
        tiny_encoder.extract_features(waveform, 16000, "token")
    with pytest.raises(RuntimeError, match="no classification head"):
        tiny_encoder.predict(waveform, 16000)


@pytest.mark.parametrize("mode", ["CLS_TOKEN", "MEAN_POOLING"])
def test_predict_matches_hand_computation(official, golden_dir_module, mode):
    ckpt = finetuned_checkpoint(official, num_classes=6, prediction_mode=mode, seed=3)
    model = PretrainedAudioEncoder.from_export(export_from_checkpoint(ckpt))
    waveform, rate = load_audio(golden_dir_module / "clip_32k_11s.wav")
    ref = torch.from_numpy(np.load(golden_dir_module / "clip_32k_11s.features.npy"))  # (513, 192)
    pooled = ref[0] if mode == "CLS_TOKEN" else ref[1:].mean(dim=0)
    m = ckpt["model"]
    normed = torch.nn.functional.layer_norm(pooled, (192,), m["fc_norm.weight"], m["fc_norm.bias"], eps=1e-6)
    expected = torch.sigmoid(normed @ m["head.weight"].T + m["head.bias"])
    [predictions] = model.predict(waveform, rate, top_k=3)
    order = torch.argsort(expected, descending=True)[:3].tolist()
    assert [p.index for p in predictions] == order
    assert [p.label_id for p in predictions] == [f"/m/{i:03d}" for i in order]
    assert [p.score for p in predictions] == pytest.approx(expected[order].tolist(), abs=1e-4)
