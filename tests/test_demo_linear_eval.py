"""The demo's linear-evaluation table and the evaluation report it is built from."""

import csv
import re
import sys

import pytest

from conftest import REPO, run

pytest.importorskip("fairseq")


def test_table_and_per_class_reports(demo_data):
    runs = demo_data / "linear_eval"
    result = run(
        [
            sys.executable, str(REPO / "scripts" / "demo_linear_eval.py"),
            "--data", str(demo_data / "data" / "manifests"), "--runs", str(runs),
            "--encoder", "random=",
            "optimization.max_update=6", "dataset.batch_size=8",
        ],
        cwd=demo_data,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (runs / "results.md").read_text()
    row = re.search(r"\| random \| ([\d.]+) \| ([\d.]+) \|", table)
    assert row and all(0.0 < float(v) <= 1.0 for v in row.groups())
    assert (runs / "results.png").stat().st_size > 0
    # evaluate_checkpoint's per-class report for each test split
    for split in ("eval_mono", "eval_poly"):
        with (runs / "random" / f"checkpoint_best_{split}_per_class_ap.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert [r["label_id"] for r in rows][:2] == ["low_hum", "mid_tone"] and len(rows) == 10
        aps = [float(r["average_precision"]) for r in rows if r["average_precision"]]
        mean = sum(aps) / len(aps)
        value = float(row.group(1 if split == "eval_mono" else 2))
        assert mean == pytest.approx(value, abs=1e-4)  # the table's mAP is the mean of the listed APs
        assert (runs / "random" / f"checkpoint_best_{split}_per_class_ap.png").stat().st_size > 0
