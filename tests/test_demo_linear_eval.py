"""The demo's linear-probe table and the per-class reports it is built from."""

import csv
import json
import re
import sys

import pytest

from conftest import REPO, run


def test_table_json_and_per_class_reports(demo_data):
    runs = demo_data / "linear_eval"
    cmd = [
        sys.executable, str(REPO / "scripts" / "demo_linear_eval.py"),
        "--data", str(demo_data / "data" / "manifests"), "--runs", str(runs),
        "--encoder", "random=", "--encoder", "random_again=",
        "epochs=5", "batch_size=8",
    ]
    result = run(cmd, cwd=demo_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "\r" not in result.stderr  # stderr is not a terminal: no progress bars in logs
    table = (runs / "results.md").read_text()
    assert table.split("\n\n", 1)[1] in result.stdout  # the printed table is the Markdown file's
    summary = json.loads((runs / "results.json").read_text())
    assert summary["probe"]["epochs"] == 5 and summary["probe"]["batch_size"] == 8 and summary["probe"]["multilabel"]
    for name in ("random", "random_again"):
        row = re.search(rf"\| {name} \| ([\d.]+) \| ([\d.]+) \|", table)
        assert row and all(0.0 < float(v) <= 1.0 for v in row.groups())
        entry = summary["encoders"][name]
        assert 1 <= entry["best_epoch"] <= 5 and entry["checkpoint"] is None
        for split, value in zip(("eval_mono", "eval_poly"), row.groups()):
            assert entry[f"{split}_mAP"] == pytest.approx(float(value), abs=5e-5)
            with (runs / name / f"probe_{split}_per_class_ap.csv").open() as handle:
                rows = list(csv.DictReader(handle))
            assert [r["label_id"] for r in rows][:2] == ["low_hum", "mid_tone"] and len(rows) == 10
            aps = [float(r["average_precision"]) for r in rows if r["average_precision"]]
            assert sum(aps) / len(aps) == pytest.approx(float(value), abs=1e-4)  # the table's mAP: mean of the APs
            assert (runs / name / f"probe_{split}_per_class_ap.png").stat().st_size > 0
    assert (runs / "results.png").stat().st_size > 0
    # both random encoders got the same seed: the same weights, the same numbers
    assert summary["encoders"]["random"]["eval_poly_mAP"] == summary["encoders"]["random_again"]["eval_poly_mAP"]

    # another --seed gives another random encoder (and head): other numbers
    again = run(cmd[:-4] + ["--seed", "2", "epochs=5", "batch_size=8"], cwd=demo_data)
    assert again.returncode == 0, again.stderr[-3000:]
    reseeded = json.loads((runs / "results.json").read_text())
    assert reseeded["encoders"]["random"]["eval_poly_mAP"] != summary["encoders"]["random"]["eval_poly_mAP"]

    wrong = run(cmd[:-2] + ["epoch=5"], cwd=demo_data)
    assert wrong.returncode != 0 and "not KEY=VALUE for one of the probe settings" in wrong.stderr
