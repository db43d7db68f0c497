"""A detection model trained a few updates through fairseq-hydra-train, scored, and used by sslam-detect."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, hydra_train, run

pytest.importorskip("fairseq")

RATE = 16000
CLASSES = {"low": 300.0, "high": 3000.0}


def _clip(path, seconds, events):
    """Noise floor plus a tone per event (onset, offset, class)."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    wave = 1e-3 * rng.standard_normal(int(seconds * RATE))
    t = np.arange(len(wave)) / RATE
    for onset, offset, label in events:
        on = (t >= onset) & (t < offset)
        wave[on] += 0.3 * np.sin(2 * np.pi * CLASSES[label] * t[on])
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), RATE)
    return len(wave)


@pytest.fixture(scope="module")
def detection_folder(tmp_path_factory):
    """train: 8 strong + 4 weak clips of 1.28 s; valid: 4 strong clips; strong labels as DCASE TSVs."""
    root = tmp_path_factory.mktemp("sed")
    rng = np.random.default_rng(0)
    for split, strong, weak in (("train", 8, 4), ("valid", 4, 0)):
        manifest, lbl, rows = ["audio"], [], ["filename\tonset\toffset\tevent_label"]
        for i in range(strong + weak):
            name = f"{split}_{i:02d}"
            label = ("low", "high")[i % 2]
            onset = round(float(rng.uniform(0.0, 0.6)), 2)
            events = [(onset, onset + 0.5, label)]
            n = _clip(root / "audio" / split / f"{name}.wav", 1.28, events)
            manifest.append(f"{split}/{name}.wav\t{n}")
            lbl.append(f"{name}\t{label}")
            if i < strong:
                rows.append(f"{name}\t{onset:.3f}\t{onset + 0.5:.3f}\t{label}")
        (root / f"{split}.tsv").write_text("\n".join(manifest) + "\n")
        (root / f"{split}.lbl").write_text("\n".join(lbl) + "\n")
        (root / f"{split}_strong.tsv").write_text("\n".join(rows) + "\n")
    (root / "label_descriptors.csv").write_text("0,low,low tone\n1,high,high tone\n")
    return root


@pytest.fixture(scope="module")
def trained(detection_folder):
    run_dir = detection_folder / "run"
    result = hydra_train("sed", "demo", [
        f"task.data={detection_folder}", "model.model_path=null", f"hydra.run.dir={run_dir}",
        "task.target_length=128", "model.linear_eval=false",
        "model.encoder.embed_dim=32", "model.encoder.depth=1", "model.encoder.num_heads=2",
        "dataset.batch_size=6", "optimization.max_update=4", "common.log_interval=1", "common.cpu=true",
    ], cwd=detection_folder)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir / "checkpoints" / "checkpoint_last.pt", result.stdout + result.stderr


def test_training_logs_both_losses_and_validates_frame_f1(trained):
    checkpoint, log = trained
    assert checkpoint.is_file()
    # 12 clips in batches of 6 hold strong and weak clips: both terms are trained and logged
    assert re.search(r"train_inner.*frame_loss=[\d.]+.*clip_loss=[\d.]+", log), log[-2000:]
    assert re.search(r"valid on 'valid' subset \| .*frame_f1 [\d.]+", log), log[-2000:]
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["task_state"]["label_ids"] == ["low", "high"]
    assert ckpt["cfg"]["model"]["encoder"]["embed_dim"] == 32  # self-contained: the architecture is saved
    assert ckpt["cfg"]["task"]["hop"] == 0.04


def test_checkpoint_is_scored_and_detects(trained, detection_folder, tmp_path):
    from sslam_plugin.detection.detector import load_detector
    from sslam_plugin.detection.evaluate import evaluate_detector, format_report

    checkpoint, _ = trained
    detector = load_detector(checkpoint)
    assert detector.labels == ["low", "high"] and detector.grid.num_frames == 32  # 1.28 s at 40 ms
    result = evaluate_detector(detector, detection_folder, "valid", thresholds=0.5, median_window=0.12)
    assert result["clips"] == 4
    for key in ("event_f1_micro", "segment_f1_micro", "psds1", "psds2"):
        assert 0.0 <= result[key] <= 1.0 or np.isnan(result[key]), (key, result[key])
    assert result["settings"]["psds1"]["dtc_threshold"] == 0.7
    assert "PSDS1" in format_report(result)
    # threshold 0: every frame of every class active -> one event per class spanning each clip
    everything = evaluate_detector(detector, detection_folder, "valid", thresholds=0.0)
    assert all(
        [(e.onset, e.offset) for e in events] == [(0.0, 1.28), (0.0, 1.28)]
        for events in everything["detections"].values()
    )

    # sslam-evaluate recognises a detection checkpoint and prints the same numbers with their settings
    from sslam_plugin.cli import evaluate as evaluate_cli

    printed = run([sys.executable, "-m", "sslam_plugin.cli.evaluate", str(checkpoint), "--data", str(detection_folder),
                   "--split", "valid", "--median-filter", "0.12", "--json"], cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    summary = json.loads(printed.stdout)
    assert summary["clips"] == 4 and summary["settings"]["psds1"]["dtc_threshold"] == 0.7
    for key in ("event_f1_micro", "psds1"):
        assert summary[key] == result[key] or (np.isnan(result[key]) and summary[key] != summary[key]), key
    assert evaluate_cli.is_detection_checkpoint(checkpoint) and not evaluate_cli.is_detection_checkpoint(tmp_path)

    # the command line, on a file longer than the model's 1.28 s window
    long_file = tmp_path / "long.wav"
    _clip(long_file, 4.0, [(1.0, 1.6, "high")])
    result = run([sys.executable, "-m", "sslam_plugin.cli.detect", str(checkpoint), str(long_file),
                  "--format", "json", "--threshold", "0.0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["long.wav"]
    assert sorted((e["event_label"], e["onset"], e["offset"]) for e in events) == [("high", 0.0, 4.0), ("low", 0.0, 4.0)]
    wrong = run([sys.executable, "-m", "sslam_plugin.cli.detect", str(detection_folder / "train.tsv"), str(long_file)],
                cwd=tmp_path)
    assert wrong.returncode == 1 and "error:" in wrong.stderr


def test_config_folder_is_the_checkouts():
    assert (REPO / "config" / "sed" / "demo.yaml").is_file()
