"""Training curves: TensorBoard events from fairseq's own options, and sslam-plot-training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import hydra_train, logged
from sslam_plugin.cli import plot_training
from sslam_plugin.training_log import read_training_log

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Real lines of a stage-2 run (hydra's file log, common.log_format=simple), cut to three updates,
# with the epoch summary, a checkpoint line and a validation line in between.
STAGE2_LOG = """\
[2026-11-29 12:21:55,101][fairseq_cli.train][INFO] - task: SSLAMPretrainingTask
[2026-11-29 12:21:58,901][train_inner][INFO] - epoch 001:      1 / 6 sample_size=1664.0, ema_decay=0.9995, loss=303.955, loss_patch=10.7933, loss_patch_mixed=10.7877, loss_source_retention=20.6587, loss_utterance=130.768, loss_utterance_mixed=130.947, masked_pct=0.8125, mixed_fraction=0.25, pred_var=0.4329, target_var=0.9764, wps=0, ups=0, wpb=1664, bsz=8, num_updates=1, lr_no_weight_decay=1.33333e-05, lr_default=1.33333e-05, gnorm=68.46, clip=100, train_wall=0, bad_clips=0, wall=4
[2026-11-29 12:21:59,223][train_inner][INFO] - epoch 001:      2 / 6 sample_size=1664.0, ema_decay=0.9995, loss=302.13, loss_patch=10.775, loss_patch_mixed=10.7704, loss_source_retention=20.7093, loss_utterance=129.917, loss_utterance_mixed=129.959, masked_pct=0.8125, mixed_fraction=0.25, pred_var=0.4336, target_var=0.9704, wps=5214.6, ups=3.13, wpb=1664, bsz=8, num_updates=2, lr_no_weight_decay=2.66667e-05, lr_default=2.66667e-05, gnorm=69.701, clip=100, train_wall=0, bad_clips=0, wall=4
[2026-11-29 12:21:59,400][valid][INFO] - epoch 001 | valid on 'valid' subset | loss 9.794 | sample_size 8 | mAP 0.50423 | wps 0 | wpb 8 | bsz 8 | num_updates 2
[2026-11-29 12:21:59,507][train_inner][INFO] - epoch 001:      3 / 6 sample_size=1664.0, ema_decay=0.9995, loss=300.293, loss_patch=10.7006, loss_patch_mixed=10.7016, loss_source_retention=20.6963, loss_utterance=129.004, loss_utterance_mixed=129.19, masked_pct=0.8125, mixed_fraction=0.25, pred_var=0.4267, target_var=0.9679, wps=6153.5, ups=3.7, wpb=1664, bsz=8, num_updates=3, lr_no_weight_decay=4e-05, lr_default=4e-05, gnorm=68.844, clip=100, train_wall=0, bad_clips=0, wall=4
[2026-11-29 12:21:59,663][fairseq.checkpoint_utils][INFO] - Saved checkpoint /runs/s2/checkpoints/checkpoint_last.pt (epoch 1 @ 3 updates, score None)
[2026-11-29 12:21:59,667][train][INFO] - epoch 001 | sample_size 1664 | loss 302.1 | loss_patch 10.75 | num_updates 3 | lr_default 4e-05
"""
STAGE2_KEYS = ("loss", "loss_patch", "loss_utterance", "loss_patch_mixed", "loss_utterance_mixed",
               "loss_source_retention", "pred_var", "target_var", "lr_default", "gnorm", "mixed_fraction")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parsed_series_equal_the_logged_values(tmp_path):
    log = read_training_log(write(tmp_path / "hydra_train.log", STAGE2_LOG))
    assert log.updates == [1, 2, 3]
    for key in STAGE2_KEYS:
        assert dict(log.series(key)) == logged(STAGE2_LOG, key), key
    assert log.series("loss_source_retention") == [(1, 20.6587), (2, 20.7093), (3, 20.6963)]
    # the epoch summary ([train]) and other loggers are not per-update values
    assert log.train["loss"][3] == 300.293
    assert "epoch" not in log.train and "num_updates" not in log.train
    assert log.valid == {"valid": {"loss": {2: 9.794}, "sample_size": {2: 8.0}, "mAP": {2: 0.50423},
                                   "wps": {2: 0.0}, "wpb": {2: 8.0}, "bsz": {2: 8.0}}}


def test_a_relaunch_from_an_earlier_checkpoint_replaces_the_updates_it_logs_again(tmp_path):
    inner = "[2026-11-29 12:00:00,000][train_inner][INFO] - epoch 001:      {u} / 9 loss={v}, num_updates={u}, lr=0.1"
    first = [inner.format(u=u, v=10 + u) for u in (1, 2, 3, 4)]  # killed after update 4
    second = [inner.format(u=u, v=20 + u) for u in (3, 4, 5)]  # resumed from the checkpoint at update 2
    log = read_training_log(write(tmp_path / "hydra_train.log", "\n".join(first + second) + "\n"))
    assert log.series("loss") == [(1, 11.0), (2, 12.0), (3, 23.0), (4, 24.0), (5, 25.0)]


def test_json_and_fairseq_console_formats_are_read(tmp_path):
    record = {"epoch": 1, "update": 0.083, "loss": "284.488", "loss_patch": "21.6676", "num_updates": "1",
              "lr_default": "1.66667e-05"}
    valid = {"epoch": 1, "valid_loss": "9.794", "valid_mAP": "0.50423", "valid_num_updates": "1"}
    text = (
        f"[2026-11-29 12:00:00,000][train_inner][INFO] - {json.dumps(record)}\n"
        f"[2026-11-29 12:00:01,000][valid][INFO] - {json.dumps(valid)}\n"
        "2026-11-29 12:00:02 | INFO | train_inner | epoch 001:      2 / 12 loss=283.1, loss_patch=21.6, num_updates=2\n"
    )
    log = read_training_log(write(tmp_path / "train.log", text))
    assert log.series("loss") == [(1, 284.488), (2, 283.1)]
    assert log.series("lr_default") == [(1, 1.66667e-05)]
    assert "update" not in log.train and "epoch" not in log.train
    assert log.valid == {"valid": {"loss": {1: 9.794}, "mAP": {1: 0.50423}}}


def test_plot_writes_a_png_with_a_panel_per_loss_term(tmp_path, capsys):
    run = tmp_path / "runs" / "sslam_stage2"
    write(run / "hydra_train.log", STAGE2_LOG)
    assert plot_training.main([str(run)]) == 0  # the run folder: its hydra_train.log
    png = run / "training_curves.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    out = capsys.readouterr().out
    assert "3 logged updates (1-3)" in out
    assert (f"wrote {png} (10 panels: loss, loss_patch, loss_utterance, loss_patch_mixed, loss_utterance_mixed, "
            "loss_source_retention, pred_var / target_var (collapse), learning rate, valid loss, valid mAP)") in out
    panels = plot_training.panels_for([read_training_log(run / "hydra_train.log")])
    titles = [p.title for p in panels]
    assert titles[:7] == ["loss", "loss_patch", "loss_utterance", "loss_patch_mixed", "loss_utterance_mixed",
                          "loss_source_retention", "pred_var / target_var (collapse)"]
    collapse = panels[6].lines[0]
    assert [name for name, _ in collapse] == ["pred_var", "target_var"]
    assert collapse[1][1] == [(1, 0.9764), (2, 0.9704), (3, 0.9679)]
    assert [name for name, _ in panels[titles.index("learning rate")].lines[0]] == ["no_weight_decay", "default"]


def test_several_runs_share_the_panels(tmp_path, capsys):
    stage1 = "\n".join(
        f"[2026-11-29 12:00:00,000][train_inner][INFO] - epoch 001:      {u} / 9 loss={300 - u}, loss_patch=21.6, "
        f"loss_utterance=262.8, pred_var=0.43, target_var=0.97, num_updates={u}, lr_default=1e-05, lr_no_weight_decay=1e-05"
        for u in range(1, 6)
    )
    write(tmp_path / "s1" / "hydra_train.log", stage1 + "\n")
    write(tmp_path / "s2" / "hydra_train.log", STAGE2_LOG)
    out_png = tmp_path / "both.png"
    argv = [str(tmp_path / "s1"), str(tmp_path / "s2" / "hydra_train.log"), "-o", str(out_png),
            "--labels", "stage1", "stage2", "--keys", "gnorm", "--log-y"]
    assert plot_training.main(argv) == 0
    assert out_png.read_bytes()[:8] == PNG_SIGNATURE
    logs = [read_training_log(tmp_path / s / "hydra_train.log") for s in ("s1", "s2")]
    panels = {p.title: p for p in plot_training.panels_for(logs, ["gnorm"])}
    assert sorted(panels["loss"].lines) == [0, 1]  # both runs in the loss panel
    assert sorted(panels["loss_source_retention"].lines) == [1]  # stage 2 only
    assert sorted(panels["gnorm"].lines) == [1]  # stage 1 did not log it
    assert plot_training.main(argv[:4] + ["--labels", "only_one"]) == 2
    assert "1 --labels for 2 runs" in capsys.readouterr().err


def test_a_log_without_train_inner_lines_is_an_error_that_says_why(tmp_path, capsys):
    write(tmp_path / "run" / "hydra_train.log", STAGE2_LOG.splitlines()[0] + "\n")
    assert plot_training.main([str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "no train_inner lines" in err and "common.log_format simple or json" in err
    assert not (tmp_path / "run" / "training_curves.png").exists()
    (tmp_path / "empty_run").mkdir()
    assert plot_training.main([str(tmp_path / "empty_run")]) == 1  # 2 is for usage errors
    assert "a folder without hydra_train.log" in capsys.readouterr().err


def test_a_run_shorter_than_the_log_interval_says_to_lower_it(tmp_path):
    """A demo-sized run: 6 updates, one train_inner line every 10 (what the demo recipes log)."""
    import subprocess
    import sys

    lines = STAGE2_LOG.splitlines()
    run = tmp_path / "run"
    write(run / ".hydra" / "config.yaml", "common:\n  log_interval: 10\n  log_format: simple\n")
    write(run / "hydra_train.log", "\n".join([lines[0], lines[5].replace("@ 3 updates", "@ 6 updates")]) + "\n")
    command = [str(Path(sys.executable).parent / "sslam-plot-training"), str(run)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {run / 'hydra_train.log'}: no train_inner lines to plot: the run logged 6 updates and fairseq "
        "writes one train_inner line every common.log_interval=10 updates (with common.log_format simple or json); "
        "for a short run, lower it, e.g. common.log_interval=1"
    ]
    # one line: plotted, with the same advice
    write(run / "hydra_train.log", "\n".join(lines[:2]) + "\n")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "one logged update draws a dot, not a curve" in result.stdout and "common.log_interval=1" in result.stdout
    # tqdm never writes the lines, whatever the interval
    write(run / ".hydra" / "config.yaml", "common:\n  log_interval: 1\n  log_format: tqdm\n")
    write(run / "hydra_train.log", lines[0] + "\n")
    result = subprocess.run(command, capture_output=True, text=True)
    assert "common.log_format=simple" in result.stderr


def test_tensorboard_place_and_wandb_run_name(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from sslam_plugin.training.launch import place_training_curves

    run = tmp_path / "runs" / "eat_stage1"
    run.mkdir(parents=True)
    monkeypatch.chdir(run)  # hydra's run folder
    monkeypatch.delenv("WANDB_NAME", raising=False)
    cfg = OmegaConf.create({"common": {"tensorboard_logdir": "tb", "wandb_project": "sslam"},
                            "checkpoint": {"save_dir": "checkpoints"}})
    place_training_curves(cfg)
    assert cfg.common.tensorboard_logdir == str(run / "tb")
    assert os.environ["WANDB_NAME"] == "eat_stage1"  # not fairseq's default, "checkpoints"
    monkeypatch.setenv("WANDB_NAME", "mine")
    place_training_curves(cfg)
    assert os.environ["WANDB_NAME"] == "mine"


# --- through fairseq-hydra-train -------------------------------------------------------------------

TINY = ["dataset.batch_size=4", "dataset.num_workers=0", "task.target_length=128", "common.log_interval=1",
        "checkpoint.save_interval_updates=0", "common.tensorboard_logdir=tb"]


def scalars(folder: Path) -> dict:
    """{tag: {step: value}} of the TensorBoard events in ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def stage1_run(demo_data):
    pytest.importorskip("fairseq")
    pytest.importorskip("tensorboard")
    run_dir = demo_data / "curves_stage1"
    result = hydra_train("pretrain", "demo_stage1", [
        "task.data=data/manifests", f"hydra.run.dir={run_dir}", "optimization.max_update=4", *TINY,
    ], cwd=demo_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, result.stdout + result.stderr


def test_tensorboard_events_hold_every_loss_term_per_update(stage1_run):
    run_dir, output = stage1_run
    assert f"TensorBoard events in {run_dir / 'tb'}" in output  # relative: inside the run folder
    events = scalars(run_dir / "tb" / "train_inner")
    log = read_training_log(run_dir / "hydra_train.log")
    for key in ("loss", "loss_patch", "loss_utterance", "pred_var", "target_var", "ema_decay", "lr_default"):
        assert sorted(events[key]) == [1, 2, 3, 4], key
        for update, value in log.series(key):  # the log rounds to 4-6 significant digits
            assert events[key][update] == pytest.approx(value, rel=1e-3, abs=1e-7), (key, update)
    assert set(scalars(run_dir / "tb" / "train")) >= {"loss", "loss_patch", "loss_utterance"}  # epoch averages


def test_plot_of_a_real_run_equals_its_log(stage1_run, capsys):
    run_dir, output = stage1_run
    text = (run_dir / "hydra_train.log").read_text()
    assert plot_training.main([str(run_dir)]) == 0
    assert (run_dir / "training_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    log = read_training_log(run_dir / "hydra_train.log")
    for key in ("loss", "loss_patch", "loss_utterance", "pred_var", "target_var", "lr_default"):
        assert dict(log.series(key)) == logged(text, key), key
        assert len(log.series(key)) == 4


def test_two_processes_write_one_set_of_stage2_events(demo_data, stage1_run):
    """Only rank 0 writes events: one file per tag, with the stage-2 terms."""
    stage1_dir, _ = stage1_run
    run_dir = demo_data / "curves_stage2"
    result = hydra_train("pretrain", "demo_stage2", [
        "task.data=data/manifests", f"hydra.run.dir={run_dir}", "optimization.max_update=3",
        f"checkpoint.continue_once={stage1_dir / 'checkpoints' / 'checkpoint_last.pt'}",
        "common.cpu=true", "distributed_training.distributed_world_size=2", *TINY,
    ], cwd=demo_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list((run_dir / "tb" / "train_inner").glob("events.out.tfevents.*"))) == 1
    events = scalars(run_dir / "tb" / "train_inner")
    for key in ("loss_patch_mixed", "loss_utterance_mixed", "loss_source_retention", "mixed_fraction"):
        assert sorted(events[key]) == [1, 2, 3], key
    log = read_training_log(run_dir / "hydra_train.log")
    assert [u for u, _ in log.series("loss_source_retention")] == [1, 2, 3]
