"""A fairseq-hydra-train run on a manifest with broken files completes and reports them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from broken_audio import sine, write, write_manifest
from conftest import hydra_train

pytest.importorskip("fairseq")

SECONDS = 2.6


def make_data(folder: Path) -> tuple:
    """16 clips: 12 usable (mono/stereo, 16/44.1 kHz, 8-bit) and 4 broken; returns (data dir, broken paths)."""
    audio = folder / "audio"
    entries = {}
    rng = np.random.default_rng(0)
    for i in range(12):
        rate = 44100 if i % 5 == 1 else 16000
        clip = sine(rate, SECONDS, freq=200 + 150 * i) + 0.01 * rng.standard_normal(int(round(rate * SECONDS))).astype(np.float32)
        data = np.stack([clip, 0.5 * clip], axis=1) if i % 4 == 2 else clip
        write(audio / f"good_{i:02d}.wav", data, rate, subtype="PCM_U8" if i == 7 else "PCM_16")
        entries[f"good_{i:02d}.wav"] = len(clip)
    nan = sine(16000, SECONDS)
    nan[100] = np.inf
    write(audio / "nan.wav", nan, 16000, subtype="FLOAT")
    (audio / "corrupt.wav").write_bytes(b"\x00\x01 definitely not audio" * 50)
    (audio / "empty.wav").write_bytes(b"")
    broken = ["corrupt.wav", "empty.wav", "nan.wav", "deleted.wav"]
    for k, rel in enumerate(broken):  # interleaved with the good clips
        entries = dict(list(entries.items())[: 3 * k + 2] + [(rel, 41600)] + list(entries.items())[3 * k + 2 :])
    (folder / "manifests").mkdir()
    write_manifest(folder / "manifests" / "train.tsv", audio, entries)
    return folder / "manifests", {str(audio / rel) for rel in broken}


def test_training_with_broken_files_completes_and_reports_them(tmp_path):
    from sslam_plugin.data import read_manifest
    from sslam_plugin.data.robust import RobustClipReader

    data, broken = make_data(tmp_path)
    run_dir = tmp_path / "run"
    result = hydra_train("pretrain", "demo_stage1", [
        f"task.data={data}",
        f"hydra.run.dir={run_dir}",
        "optimization.max_update=4",  # 16 clips, batch 4: one epoch, every clip visited once
        "dataset.batch_size=4",
        "dataset.num_workers=0",
        "task.target_length=128",
        "common.log_interval=1",
        "checkpoint.save_interval_updates=0",
        # a smaller model: this test is about the data path
        "model.encoder.embed_dim=64", "model.encoder.depth=2", "model.encoder.num_heads=2",
        "model.decoder.dim=64", "model.decoder.layers=1", "model.average_top_k_layers=2", "model.clone_batch=2",
    ], cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert (run_dir / "checkpoints" / "checkpoint_last.pt").is_file()
    # the pre-flight check read all 16 clips and warned about the 4 broken ones
    assert "4 of 16 clips checked before training are unusable" in log
    # every distinct broken file is listed once, with its reason
    listed = dict(line.split("\t") for line in (run_dir / "checkpoints" / "failed_clips.tsv").read_text().splitlines())
    assert set(listed) == broken
    assert listed[str(tmp_path / "audio" / "nan.wav")] == "contains NaN or Inf samples"
    assert listed[str(tmp_path / "audio" / "deleted.wav")] == "file not found"
    assert listed[str(tmp_path / "audio" / "corrupt.wav")].startswith("cannot decode audio")
    # the counter is logged every update; its total is what the same reader predicts
    # (a substitute can itself be broken and is counted again)
    per_update = [int(float(m)) for m in re.findall(r"train_inner.*?bad_clips=([\d.]+)", log)]
    assert len(per_update) == 4
    reader = RobustClipReader(read_manifest(data / "train.tsv", min_samples=10000), seed=1)
    expected = sum(len(reader.read(i).failures) for i in range(16))
    assert expected >= 4 and sum(per_update) == expected
    epoch_lines = [line for line in log.splitlines() if "[train][" in line and "epoch 001 |" in line]
    assert any(re.search(rf"\| bad_clips {expected} \|", line) for line in epoch_lines), epoch_lines
