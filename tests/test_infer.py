"""scripts/infer.py: top-k labels of a fine-tuned checkpoint, checked by hand."""

from __future__ import annotations

import json

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
