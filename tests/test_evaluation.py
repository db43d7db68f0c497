"""sslam_plugin.evaluation.evaluate_checkpoint: the summary, the per-class report and the scores agree."""

import csv

import pytest
import soundfile as sf
import torch

from export_helpers import finetuned_checkpoint, load_official, write_wav
from sslam_plugin.data import read_label_descriptors, read_manifest
from sslam_plugin.evaluation import evaluate_checkpoint, labelled_targets
from sslam_plugin.inference import load_encoder
from sslam_plugin.metrics import mean_average_precision


def test_evaluate_checkpoint_scores_every_clip_and_writes_the_report(golden_dir, tmp_path):
    checkpoint = tmp_path / "ft.pt"
    torch.save(finetuned_checkpoint(load_official(golden_dir), num_classes=3, seed=1), checkpoint)
    data = tmp_path / "data"
    labels = ["/m/000", "/m/001", "/m/002"]
    (data / "audio").mkdir(parents=True)
    (data / "label_descriptors.csv").write_text("".join(f"{i},{lab},Sound {i}\n" for i, lab in enumerate(labels)))
    lines, lbl = [str(data / "audio")], []
    for i in range(7):
        write_wav(data / "audio" / f"c{i}.wav", 0.5 + 0.1 * i, seed=i)
        lines.append(f"c{i}.wav\t{int((0.5 + 0.1 * i) * 16000)}")
        lbl.append(f"c{i}\t{labels[i % 3]}" + (f",{labels[(i + 1) % 3]}" if i % 2 else ""))
    (data / "eval.tsv").write_text("\n".join(lines) + "\n")
    (data / "eval.lbl").write_text("\n".join(lbl) + "\n")

    summary = evaluate_checkpoint(checkpoint, data, "eval", out_dir=tmp_path / "report", batch_size=3, device="cpu")
    assert summary["clips"] == 7 and summary["metric"] == "mAP"
    # the same number from the encoder's own logits, clip by clip
    model = load_encoder(checkpoint)
    manifest = read_manifest(data / "eval.tsv")
    waves = [torch.from_numpy(sf.read(manifest.full_path(i), dtype="float32")[0]) for i in range(7)]
    fbank = model.fbank(waves, 16000)  # (N, T, M)
    targets = labelled_targets(manifest, data / "eval.lbl", read_label_descriptors(data / "label_descriptors.csv"))
    expected, per_class = mean_average_precision(model.logits(fbank), targets)
    assert summary["value"] == pytest.approx(expected, abs=1e-6)
    with open(summary["per_class_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label_id"] for r in rows] == labels
    assert [float(r["average_precision"]) for r in rows] == pytest.approx(per_class.tolist(), abs=1e-6)
    assert [int(r["positives"]) for r in rows] == targets.sum(0).int().tolist()
    assert summary["chart"].endswith("ft_eval_per_class_ap.png")


def test_a_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    from sslam_plugin.cli.evaluate import main

    assert main([str(tmp_path / "nope.pt"), "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nope.pt'}: no such file or folder"
