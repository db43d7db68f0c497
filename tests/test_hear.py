"""sslam_plugin.hear: the HEAR 2021 API, against the encoder's own outputs, the golden features and hear-validator."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sslam_plugin import hear
from sslam_plugin.checkpoints import export_from_checkpoint, save_export
from sslam_plugin.data import load_audio
from sslam_plugin.waveform import WaveformError

from conftest import REPO, venv_bin
from export_helpers import tiny_pretraining_checkpoint

RATE = 16000
WINDOW = 128  # fbank frames in the tiny model's window (1.28 s)
HOP = 160  # samples between fbank frames
WINDOW_STEP = WINDOW * HOP  # samples between window starts: 20480
WINDOW_SAMPLES = (WINDOW - 1) * HOP + 400  # samples giving exactly one window of frames: 20720


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hear") / "tiny.pt"
    torch.save(tiny_pretraining_checkpoint(target_length=WINDOW), path)
    return path


@pytest.fixture(scope="module")
def model(tiny_path):
    return hear.load_model(str(tiny_path))


def noise(*shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 1.6 - 0.8


def frames(samples: int) -> int:
    return 1 + (samples - 400) // HOP


def test_sizes_dtypes_and_attributes(model):
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 32  # the tiny model's width
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    audio = noise(3, 2 * RATE + 123)
    audio[1] = 0.5 * torch.sin(torch.arange(audio.shape[1]) * (2 * math.pi * 440 / RATE))
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    rows = math.ceil(frames(audio.shape[1]) / 16)
    assert emb.shape == (3, rows, model.timestamp_embedding_size) and emb.dtype == torch.float32
    assert ts.shape == (3, rows) and ts.dtype == torch.float32
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and scene.dtype == torch.float32
    assert not torch.allclose(scene[0], scene[1], atol=1e-3)  # different sounds, different embeddings


@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.0, 3.9])
def test_timestamps_are_row_centres_in_ms_covering_the_sound(model, seconds):
    samples = int(seconds * RATE)
    emb, ts = hear.get_timestamp_embeddings(noise(2, samples), model)
    assert torch.equal(ts[0], ts[1])
    t = ts[0].double()
    assert t[0] == 80.0  # centre of frames 0-15, 10 ms each
    assert torch.equal(t.diff(), torch.full_like(t[1:], 160.0))  # monotone, one patch row apart
    duration_ms = 1000.0 * samples / RATE
    assert t[-1] + 80 >= duration_ms - 15  # the last row reaches the last frame (a frame is 25 ms long, 10 ms apart)
    assert t[-1] - 80 < frames(samples) * 10  # and no row is only padding


def test_long_sound_equals_its_windows_encoded_apart(model):
    samples = 3 * WINDOW_STEP + 5000  # 413 frames: windows of 128, 128, 128 and 29 frames
    audio = noise(2, samples, seed=1)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape[1] == 8 + 8 + 8 + math.ceil(29 / 16) == math.ceil(frames(samples) / 16)
    encoder = model.encoder
    cls = []
    for k in range(4):
        segment = audio[:, k * WINDOW_STEP : k * WINDOW_STEP + WINDOW_SAMPLES]  # exactly window k's frames
        tokens = encoder(segment, RATE)  # (2, 1 + 8 * 8, D), the plain cropping path
        rows = tokens[:, 1:].reshape(2, 8, 8, -1).mean(dim=2)  # (2, R, F, D) -> (2, R, D) by hand
        kept = emb[:, 8 * k : 8 * k + 8]
        assert torch.allclose(kept, rows[:, : kept.shape[1]], atol=1e-4)
        seg_emb, seg_ts = hear.get_timestamp_embeddings(segment, model)
        assert torch.allclose(kept, seg_emb, atol=1e-4)
        assert torch.allclose(ts[:, 8 * k : 8 * k + 8] - 1280.0 * k, seg_ts)  # window k starts at 1280 ms
        cls.append(tokens[:, 0])
    scene = hear.get_scene_embeddings(audio, model)
    assert torch.allclose(scene, torch.stack(cls).mean(dim=0), atol=1e-4)  # CLS averaged over windows
    # "mean": every kept patch token counts once; each row holds the same number of patches
    mean_model = hear.HearModel(encoder, scene_pooling="mean")
    assert torch.allclose(hear.get_scene_embeddings(audio, mean_model), emb.mean(dim=1), atol=1e-5)


def test_finer_timestamps_repeat_each_row(tiny_path, model):
    audio = noise(2, 3 * RATE, seed=2)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    fine = hear.load_model(str(tiny_path), timestamp_hop_ms=40)
    emb40, ts40 = hear.get_timestamp_embeddings(audio, fine)
    assert emb40.shape == (2, 4 * emb.shape[1], emb.shape[2])
    assert torch.equal(ts40[0].double(), torch.arange(ts40.shape[1], dtype=torch.float64) * 40 + 20)
    row = (ts40[0] // 160).long()  # the patch row each fine timestamp lies in
    assert torch.equal(emb40, emb[:, row])
    assert torch.all((ts[0, row] - ts40[0]).abs() < 80)
    for bad in (50, 0, -40, 320):
        with pytest.raises(ValueError, match="timestamp_hop_ms must divide the patch row"):
            hear.HearModel(model.encoder, timestamp_hop_ms=bad)


def test_load_model_takes_exports_and_checks_options(tiny_path, model, tmp_path):
    folder = save_export(export_from_checkpoint(torch.load(tiny_path, weights_only=True)), tmp_path / "export")
    from_folder = hear.load_model(str(folder))
    audio = noise(1, RATE, seed=3)
    assert torch.equal(hear.get_scene_embeddings(audio, from_folder), hear.get_scene_embeddings(audio, model))
    teacher = hear.load_model(str(tiny_path), teacher=True)  # the tiny checkpoint's teacher is perturbed
    assert not torch.allclose(hear.get_scene_embeddings(audio, teacher), hear.get_scene_embeddings(audio, model))
    with pytest.raises(ValueError, match="needs a checkpoint"):
        hear.load_model()
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['hop'\]"):
        hear.load_model(str(tiny_path), hop=40)
    with pytest.raises(ValueError, match="scene_pooling"):
        hear.load_model(str(tiny_path), scene_pooling="max")


def test_bad_audio(model):
    audio = noise(2, RATE, seed=4)
    audio[1, 5] = float("nan")
    with pytest.raises(WaveformError, match=r"NaN or Inf samples \(first at index \(1, 5\)\)"):
        hear.get_scene_embeddings(audio, model)
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_timestamp_embeddings(noise(RATE), model)
    pcm = (noise(2, RATE, seed=5) * 32767).round()
    assert torch.equal(
        hear.get_scene_embeddings(pcm.to(torch.int16), model), hear.get_scene_embeddings(pcm / 32768, model)
    )
    # a sound shorter than one analysis window is zero-padded to one
    short = noise(2, 100, seed=6)
    emb, ts = hear.get_timestamp_embeddings(short, model)
    padded, _ = hear.get_timestamp_embeddings(torch.nn.functional.pad(short, (0, 300)), model)
    assert emb.shape == (2, 1, 32) and ts.tolist() == [[80.0], [80.0]] and torch.equal(emb, padded)


def test_official_checkpoint_matches_golden_features(golden_dir):
    model = hear.load_model(str(golden_dir / "official_eat_tiny_checkpoint.pt"))
    waveform, rate = load_audio(golden_dir / "clip_16k_6s.wav")  # 6.5 s: 648 frames, one 1024-frame window
    assert rate == RATE
    ref = torch.from_numpy(np.load(golden_dir / "clip_16k_6s.features.npy"))  # (1 + 64 * 8, 192), official code
    scene = hear.get_scene_embeddings(waveform[None], model)
    assert torch.allclose(scene[0], ref[0], atol=1e-4)
    emb, ts = hear.get_timestamp_embeddings(waveform[None], model)
    rows = ref[1:].reshape(64, 8, 192).mean(dim=1)[: math.ceil(648 / 16)]  # the 41 rows holding audio
    assert emb.shape == (1, 41, 192) and torch.allclose(emb[0], rows, atol=1e-4)
    assert ts[0, -1].item() == 40 * 160 + 80


@pytest.mark.parametrize("which", ["tiny", "official"])
def test_hear_validator_accepts_the_module(which, tiny_path, tmp_path):
    # `make test` installs it in .venv-hear (see the Makefile), apart from the training venv
    validator = os.environ.get("SSLAM_HEAR_VALIDATOR", str(REPO / ".venv-hear" / "bin" / "hear-validator"))
    if shutil.which(validator) is None:
        validator = venv_bin("hear-validator")
    if shutil.which(validator) is None:
        pytest.skip("hear-validator is not installed (`make test` puts it in .venv-hear; or pip install hearvalidator)")
    if which == "official":
        from conftest import GOLDEN, require_reference

        path = require_reference(GOLDEN) / "official_eat_tiny_checkpoint.pt"
    else:
        path = tiny_path  # 1.28 s windows: the validator's 2 s and 3.74 s sounds are windowed
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [validator, "sslam_plugin.hear", "--model", str(path), "--device", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Looks good!" in result.stdout
    width = 32 if which == "tiny" else 192
    assert f"scene_embedding_size: {width}" in result.stdout
    assert "Received embedding of shape: torch.Size([16, 13, %d])" % width in result.stdout  # 2 s: 13 rows
