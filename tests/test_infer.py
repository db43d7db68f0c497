"""scripts/infer.py: top-k labels of a fine-tuned checkpoint, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export_helpers import finetuned_checkpoint, load_official, run_python, script, tiny_pretraining_checkpoint

CLIPS = ("clip_16k_6s", "clip_32k_11s")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from conftest import GOLDEN, require_reference

    ckpt = finetuned_checkpoint(load_official(require_reference(GOLDEN)), num_classes=7, seed=11)
    path = tmp_path_factory.mktemp("ft") / "finetuned.pt"
    torch.save(ckpt, path)
    return path, ckpt


def expected_scores(golden_dir, ckpt, clip, activation):
    """CLS of the golden features -> fc_norm -> head -> sigmoid or softmax, by hand."""
    cls = torch.from_numpy(np.load(golden_dir / f"{clip}.features.npy"))[0]
    m = ckpt["model"]
    mean, var = cls.mean(), cls.var(unbiased=False)
    normed = (cls - mean) / torch.sqrt(var + 1e-6) * m["fc_norm.weight"] + m["fc_norm.bias"]
    logits = m["head.weight"] @ normed + m["head.bias"]
    return torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=0)


def check(report, golden_dir, ckpt, activation, k):
    assert [item["file"].rsplit("/", 1)[-1] for item in report] == [f"{c}.wav" for c in CLIPS]
    for item, clip in zip(report, CLIPS):
        scores = expected_scores(golden_dir, ckpt, clip, activation)
        order = torch.argsort(scores, descending=True)[:k].tolist()
        got = item["predictions"]
        assert [p["index"] for p in got] == order
        assert [p["label_id"] for p in got] == [f"/m/{i:03d}" for i in order]
        assert [p["name"] for p in got] == [f"Sound {i}, kind {chr(65 + i)}" for i in order]
        assert [p["score"] for p in got] == pytest.approx(scores[order].tolist(), abs=1e-4)


def test_cli_top_k_sigmoid(finetuned, golden_dir):
    path, ckpt = finetuned
    wavs = [str(golden_dir / f"{c}.wav") for c in CLIPS]
    result = run_python(["scripts/infer.py", str(path), *wavs, "--top-k", "4", "--json", "--device", "cpu"])
    assert result.returncode == 0, result.stderr
    check(json.loads(result.stdout), golden_dir, ckpt, "sigmoid", 4)


def test_softmax_and_text_output(finetuned, golden_dir, capsys):
    path, ckpt = finetuned
    infer = script("infer").main
    wavs = [str(golden_dir / f"{c}.wav") for c in CLIPS]
    assert infer([str(path), *wavs, "--top-k", "3", "--json", "--activation", "softmax", "--device", "cpu"]) == 0
    check(json.loads(capsys.readouterr().out), golden_dir, ckpt, "softmax", 3)
    assert infer([str(path), wavs[0], "--top-k", "2", "--device", "cpu"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].endswith("clip_16k_6s.wav") and text[1].lstrip().startswith("1. ") and len(text) == 3


def test_labels_csv_overrides_names(finetuned, golden_dir, tmp_path, capsys):
    path, _ = finetuned
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("".join(f"{i},id{i},name {i}\n" for i in range(7)))
    infer = script("infer").main
    assert infer([str(path), str(golden_dir / "clip_16k_6s.wav"), "--labels", str(csv_path), "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert all(p["name"] == f"name {p['index']}" for p in item["predictions"])


def test_pretrained_checkpoint_is_refused(tmp_path, capsys):
    path = tmp_path / "pretrained.pt"
    torch.save(tiny_pretraining_checkpoint(), path)
    assert script("infer").main([str(path), str(tmp_path / "x.wav")]) == 1
    assert "no classification head" in capsys.readouterr().err


def test_installed_command_on_a_long_file_scores_its_first_window(finetuned, tmp_path):
    """Of a 2.5-minute 44.1 kHz file only the start is decoded; the scores are those of the whole read."""
    import subprocess
    import sys

    import soundfile as sf

    from sslam_plugin.data import load_audio
    from sslam_plugin.inference import load_encoder

    path, _ = finetuned
    rate = 44100
    t = np.arange(150 * rate) / rate
    noise = 0.05 * np.random.default_rng(3).standard_normal(t.size)
    wav = 0.3 * np.sin(2 * np.pi * (400 + 300 * np.sin(0.3 * t)) * t) + noise + 0.05  # a DC offset too
    long_file = tmp_path / "long.wav"
    sf.write(str(long_file), wav.astype(np.float32), rate, subtype="PCM_16")
    command = Path(sys.executable).with_name("sslam-infer")
    assert command.is_file(), f"{command} missing: install the package (make venv) to test the command"
    done = subprocess.run([str(command), str(path), str(long_file), "--top-k", "7", "--json", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "longer than the model's window" in done.stderr  # the whole file's length is still reported
    [item] = json.loads(done.stdout)
    model = load_encoder(path)
    expected = model.scores(*load_audio(long_file))[0]
    got = {p["index"]: p["score"] for p in item["predictions"]}
    assert sorted(got) == list(range(7))
    assert [got[i] for i in range(7)] == pytest.approx(expected.tolist(), abs=1e-4)
