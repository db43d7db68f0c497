"""scripts/ablation.py: its bookkeeping (equal updates, spread over seeds) and a toy-scale run, not the science."""

import importlib.util
import json
import math
import sys

import pytest
import torch

from conftest import REPO, run

spec = importlib.util.spec_from_file_location("ablation", REPO / "scripts" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def test_mean_and_sample_std_and_the_paired_difference():
    per_seed = {
        1: {"mbua": {"eval_poly": 0.50}, "sslam": {"eval_poly": 0.53}},
        2: {"mbua": {"eval_poly": 0.60}, "sslam": {"eval_poly": 0.61}},
        3: {"mbua": {"eval_poly": 0.55}, "sslam": {"eval_poly": 0.60}},
    }
    summary = ablation.aggregate(per_seed)
    assert summary["mbua"]["eval_poly"]["mean"] == pytest.approx(0.55)
    assert summary["mbua"]["eval_poly"]["std"] == pytest.approx(0.05)  # sqrt((0.05^2 + 0.05^2 + 0) / 2)
    assert summary["sslam"]["eval_poly"]["mean"] == pytest.approx(0.58)
    # differences 0.03, 0.01, 0.05: paired by seed, not the difference of the two spreads
    assert summary["sslam-mbua"]["eval_poly"]["mean"] == pytest.approx(0.03)
    assert summary["sslam-mbua"]["eval_poly"]["std"] == pytest.approx(0.02)
    assert summary["sslam-mbua"]["eval_poly"]["n"] == 3
    assert ablation.mean_std([0.7]) == {"mean": 0.7, "std": 0.0, "n": 1}


def _fake_run(folder, updates_in_checkpoint, updates_in_log):
    (folder / "checkpoints").mkdir(parents=True)
    torch.save({"model": {}, "optimizer_history": [{"num_updates": updates_in_checkpoint}]}, folder / "checkpoints" / "checkpoint_last.pt")
    (folder / "hydra_train.log").write_text(
        f"[train_inner][INFO] - epoch 001:     10 / 30 loss=3.2, num_updates={updates_in_log - 1}, lr=1e-4\n"
        f"[train][INFO] - epoch 002 | loss 3.1 | num_updates {updates_in_log} | lr 1e-5\n"
        "[fairseq_cli.train][INFO] - done training in 12.5 seconds\n"
    )
    return folder


def test_both_arms_must_have_the_same_updates_in_checkpoint_and_log(tmp_path):
    runs = {"mbua": _fake_run(tmp_path / "a", 150, 150), "sslam": _fake_run(tmp_path / "b", 150, 150)}
    assert ablation.check_equal_updates(runs, 150) == {"mbua": 150, "sslam": 150}
    assert ablation.logged_train_seconds(runs["mbua"] / "hydra_train.log") == 12.5
    with pytest.raises(RuntimeError, match="did not get 150 updates each"):
        ablation.check_equal_updates({**runs, "sslam": _fake_run(tmp_path / "c", 140, 140)}, 150)
    with pytest.raises(RuntimeError, match="checkpoint says 150 updates, its log 149"):
        ablation.check_equal_updates({**runs, "sslam": _fake_run(tmp_path / "d", 150, 149)}, 150)


def test_the_arms_differ_only_in_the_mixing(tmp_path):
    mbua = ablation.arm_overrides("mbua", tmp_path / "data", tmp_path / "s1.pt", 4, 60)
    sslam = ablation.arm_overrides("sslam", tmp_path / "data", tmp_path / "s1.pt", 4, 60)
    assert ablation.ARM_RECIPES["mbua"] == ablation.ARM_RECIPES["sslam"] == "demo_stage2"
    assert mbua == sslam + ablation.MBUA_OVERRIDES and "model.mixing.enabled=false" in mbua
    assert "optimization.max_update=60" in sslam and "model.ema_anneal_end_step=60" in sslam
    assert f"checkpoint.continue_once={tmp_path / 's1.pt'}" in sslam and "common.seed=4" in sslam


def test_toy_ablation_end_to_end(demo_data):
    pytest.importorskip("fairseq")
    runs = demo_data / "ablation"
    result = run(
        [
            sys.executable, str(REPO / "scripts" / "ablation.py"),
            "--data", str(demo_data / "data" / "manifests"), "--runs", str(runs),
            "--seeds", "1", "2", "--updates", "3", "--stage1-updates", "4",
            "epochs=2", "batch_size=8",
        ],
        cwd=demo_data,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = json.loads((runs / "ablation.json").read_text())
    assert out["seeds"] == [1, 2] and out["updates_per_arm"] == 3
    for seed in ("1", "2"):
        assert out["details"][seed]["updates"] == {"mbua": 3, "sslam": 3}
        for arm in ("mbua", "sslam"):
            log = (runs / f"seed{seed}" / arm / "hydra_train.log").read_text()
            assert "stage1/checkpoints/checkpoint_last.pt" in log  # both start from the shared stage-1 checkpoint
            assert ("loss_source_retention" in log) == (arm == "sslam")  # only sslam mixes
            assert "bsz=8" in log or "bsz 8" in log
    for arm in ("stage1", "mbua", "sslam"):
        for split in ("eval_mono", "eval_poly"):
            values = [out["per_seed"][s][arm][split] for s in ("1", "2")]
            assert all(0.0 < v <= 1.0 for v in values)
            assert out["summary"][arm][split]["mean"] == pytest.approx(sum(values) / 2)
            assert out["summary"][arm][split]["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    # the shared stage-1 encoder is the same in both seeds; only its probe's seed differs
    assert (runs / "stage1" / "checkpoints" / "checkpoint_last.pt").exists() and not (runs / "seed1" / "stage1").exists()
    assert "sslam-mbua" in (runs / "ablation.md").read_text()
    assert (runs / "ablation.png").stat().st_size > 0
