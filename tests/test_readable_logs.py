"""Readable training logs: learning rates by group name, and fairseq's config and model printout in a file.

fairseq logs each composite-optimizer group's lr under the md5 of its overrides
(``lr_2484968c...``) and the whole config as one line of thousands of
characters; the plugin logs ``lr_default``, ``lr_block_3``, ... and writes the
config and model to ``RUN/config_and_model.log``. The optimizer's group keys
(under which checkpoints hold its state) stay fairseq's, so a run resumes.
"""

from __future__ import annotations

import re

import pytest
import torch

from conftest import hydra_train

pytest.importorskip("fairseq")

HASHED_LR = re.compile(r"\blr_[0-9a-f]{32}=")


def _finetune(demo_data, run_dir, max_update: int, *extra: str):
    return hydra_train("finetune", "demo", [
        f"task.data={demo_data / 'data' / 'manifests'}",
        "model.model_path=null", f"hydra.run.dir={run_dir}", "common.cpu=true",
        "dataset.batch_size=8", "dataset.num_workers=0", "common.log_interval=1",
        "model.encoder.depth=2", "++model.exempt_norms_biases_from_decay=true",
        f"optimization.max_update={max_update}", "optimizer.groups.default.lr_scheduler.warmup_updates=2",
        "checkpoint.save_interval_updates=3", *extra,
    ], cwd=demo_data)


def test_finetuning_logs_readable_lr_names_and_folds_config_and_model(demo_data, tmp_path):
    run_dir = tmp_path / "run"
    result = _finetune(demo_data, run_dir, 3)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    lr_keys = set(re.findall(r"\b(lr_[A-Za-z0-9_]+)=", log))
    # depth 2, layer decay 0.75: blocks 0 and 1 get their own lr scale; the front end and head keep 1 (default)
    assert {"lr_default", "lr_no_weight_decay", "lr_block_0", "lr_block_1",
            "lr_block_0_no_weight_decay", "lr_block_1_no_weight_decay"} <= lr_keys, lr_keys
    assert not HASHED_LR.search(log)
    # the values follow the layer-decay rule: block i of D gets 0.75 ** (D - i) of the default lr
    line = [ln for ln in log.splitlines() if "train_inner" in ln][-1]
    value = {k: float(v) for k, v in re.findall(r"\b(lr_[a-z0-9_]+)=([-\d.e+]+)", line)}
    assert value["lr_block_0"] == pytest.approx(value["lr_default"] * 0.75**2, rel=1e-4)
    assert value["lr_block_1_no_weight_decay"] == pytest.approx(value["lr_default"] * 0.75, rel=1e-4)

    # start-up noise: no giant config line; the config and the model are in the run folder's file
    assert max(len(ln) for ln in log.splitlines()) < 1000
    folded = (run_dir / "config_and_model.log").read_text()
    assert "# config" in folded and "# model" in folded
    assert "layer_decay" in folded and "SSLAMClassifierModel" in folded
    assert f"is in {run_dir / 'config_and_model.log'}" in log
    for noise in ("Future Hydra versions will no longer change", "'pin_memory' argument", "torch.cuda.amp.autocast"):
        assert noise not in log  # warnings that ask nothing of the user

    # the optimizer state keeps fairseq's group keys, and the run resumes from it
    state = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    keys = set(state["last_optimizer_state"])
    assert "default" in keys and any(re.fullmatch(r"[0-9a-f]{32}", k) for k in keys)
    resumed = _finetune(demo_data, run_dir, 5, "task.accept_config_changes=true")  # a longer run
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "Loaded checkpoint" in log and "num_updates=5" in log
    assert "lr_block_1=" in log and not HASHED_LR.search(log)

    # the run's log, as sslam-plot-training reads it, holds the readable names
    from sslam_plugin.training_log import find_training_log, read_training_log

    train = read_training_log(find_training_log(run_dir)).train
    assert {"lr_default", "lr_block_0", "lr_block_1_no_weight_decay"} <= set(train)
    assert not any(re.fullmatch(r"lr_[0-9a-f]{32}", k) for k in train)


def test_plot_labels_readable_and_older_hashed_lr_names():
    from sslam_plugin.cli.plot_training import _lr_label

    assert _lr_label("lr_block_3") == "block_3" and _lr_label("lr") == "lr"
    assert _lr_label("lr_2484968cd5e1f0a3b7c9d2e4f6a8b0c1") == "group 248496"  # a log from before the names
