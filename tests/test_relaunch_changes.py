"""A relaunch that would continue a checkpoint as another experiment is refused (sslam_plugin.training.resume)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

pytest.importorskip("fairseq")

from omegaconf import OmegaConf  # noqa: E402

from conftest import hydra_train  # noqa: E402
from sslam_plugin.training.launch import LAUNCH_REFUSED_EXIT_STATUS  # noqa: E402
from sslam_plugin.training.checkpoint_summary import CheckpointSummary  # noqa: E402
from sslam_plugin.training.relaunch_changes import (  # noqa: E402
    ChangedConfigError,
    check_config_changes,
    config_changes,
)

COSINE = {"_name": "cosine", "warmup_updates": 30}
PRETRAINING = {
    "common": {"seed": 1, "fp16": False, "bf16": False, "log_interval": 10},
    "checkpoint": {"save_interval_updates": 0, "continue_once": None},
    "dataset": {"batch_size": 4, "num_workers": 0},
    "distributed_training": {"distributed_world_size": 1},
    "optimization": {"lr": [0.0005], "max_update": 6, "update_freq": [1], "clip_norm": 4.0, "max_epoch": 0},
    "task": {
        "_name": "sslam_pretraining", "data": "/data/manifests", "target_length": 128, "norm_mean": -4.268,
        "norm_std": 4.569, "mask_ratio": 0.8, "preflight_clips": 16, "failed_clips_dir": "/run/checkpoints",
        "effective_batch_size": None, "clone_batch": 4, "seed": 1, "accept_config_changes": False,
    },
    "model": {
        "_name": "sslam_pretraining", "clone_batch": 4, "ema_decay": 0.999, "compile_modules": False,
        "encoder": {"embed_dim": 128, "depth": 4, "num_heads": 4, "patch_size": 16},
        "decoder": {"dim": 128, "layers": 2},
        "mixing": {"enabled": True, "operation": "max", "unmixed_window_frames": 240, "seed": 1},
    },
    "criterion": {"_name": "sslam_weighted_losses", "loss_weights": {}, "log_keys": ["pred_var"]},
    "optimizer": {"_name": "composite", "groups": {"default": {
        "lr_float": 0.0005, "lr_scheduler": COSINE, "optimizer": {"_name": "adam", "weight_decay": 0.05}}}},
    "lr_scheduler": {"_name": "pass_through"},
}
FINETUNING = {
    **PRETRAINING,
    "task": {"_name": "sslam_classification", "data": "/data/as20k", "target_length": 1024, "multilabel": True,
             "roll_aug": True, "seed": 1, "weights_file": None},
    "model": {"_name": "sslam_classifier", "model_path": "/stage2.pt", "trust_checkpoint": False, "mixup_alpha": 0.8,
              "layer_decay": 0.75, "drop_path_rate": 0.1, "encoder": {"depth": 12}},
    "criterion": {"_name": "sslam_classification", "label_smoothing": 0.0},
}


def changed(base: dict, key: str, value) -> dict:
    cfg = copy.deepcopy(base)
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return cfg


REFUSED = [
    (PRETRAINING, "task.data", "/other/manifests"),
    (PRETRAINING, "task.target_length", 512),
    (PRETRAINING, "task.norm_mean", -5.0),
    (PRETRAINING, "task.norm_std", 3.0),
    (PRETRAINING, "task.mask_ratio", 0.75),
    (PRETRAINING, "model.clone_batch", 8),
    (PRETRAINING, "model.encoder.depth", 12),
    (PRETRAINING, "model.encoder.embed_dim", 768),
    (PRETRAINING, "model.decoder.layers", 6),
    (PRETRAINING, "model.ema_decay", 0.9998),
    (PRETRAINING, "model.mixing.enabled", False),
    (PRETRAINING, "model.mixing.operation", "add"),
    (PRETRAINING, "model.mixing.unmixed_window_frames", 32),
    (PRETRAINING, "common.seed", 5),
    (PRETRAINING, "optimization.lr", [0.005]),
    (PRETRAINING, "optimization.clip_norm", 0.0),
    (PRETRAINING, "optimization.max_update", 300),  # the cosine schedule's length
    (PRETRAINING, "optimizer.groups.default.lr_float", 0.005),
    (PRETRAINING, "optimizer.groups.default.lr_scheduler.warmup_updates", 3),
    (PRETRAINING, "optimizer.groups.default.optimizer.weight_decay", 0.0),
    (PRETRAINING, "criterion.loss_weights", {"utterance": 2.0}),
    (FINETUNING, "task.multilabel", False),
    (FINETUNING, "task.roll_aug", False),
    (FINETUNING, "model.mixup_alpha", 0.0),
    (FINETUNING, "model.layer_decay", 0.65),
    (FINETUNING, "criterion.label_smoothing", 0.1),
]


@pytest.mark.parametrize("base,key,value", REFUSED, ids=[f"{b['task']['_name']}:{k}" for b, k, _ in REFUSED])
def test_each_setting_of_the_experiment_is_compared_with_both_values(base, key, value):
    changes = config_changes(base, OmegaConf.create(changed(base, key, value)))
    listed = {str(change) for change in changes}
    old = OmegaConf.select(OmegaConf.create(base), key)
    old = OmegaConf.to_container(old) if OmegaConf.is_config(old) else old
    assert any(line.startswith(f"{key}") and f"checkpoint: {old!r}, now: {value!r}" in line for line in listed), listed


def test_the_effective_batch_is_compared_and_may_be_kept_on_another_process_count():
    # 4 clips x update_freq 2 x 1 process -> 4 x 1 x 2 processes: the same 8 clips per update
    saved = changed(PRETRAINING, "optimization.update_freq", [2])
    same = changed(changed(PRETRAINING, "distributed_training.distributed_world_size", 2), "dataset.batch_size", 4)
    assert config_changes(saved, OmegaConf.create(same)) == []
    assert config_changes(saved, OmegaConf.create(PRETRAINING), world_size=2) == []
    (change,) = config_changes(saved, OmegaConf.create(PRETRAINING))
    assert str(change) == (
        "effective batch (clips per update): checkpoint: '8 (4 per process x update_freq 2 x 1 processes)', "
        "now: '4 (4 per process x update_freq 1 x 1 processes)'"
    )


ALLOWED = [
    ("dataset.num_workers", 8),
    ("common.log_interval", 1),
    ("common.fp16", True),  # the hardware's choice: precision may change with the machine
    ("common.bf16", True),
    ("checkpoint.save_interval_updates", 100),
    ("optimization.max_epoch", 10),
    ("task.preflight_clips", 0),
    ("task.failed_clips_dir", "/elsewhere"),
    ("task.effective_batch_size", 4),  # compared as the clips per update it makes
    ("task.accept_config_changes", True),
    ("model.compile_modules", True),
    ("criterion.log_keys", ["pred_var", "target_var"]),
]


@pytest.mark.parametrize("key,value", ALLOWED, ids=[k for k, _ in ALLOWED])
def test_what_may_change_between_launches_of_one_run_is_not_compared(key, value):
    assert config_changes(PRETRAINING, OmegaConf.create(changed(PRETRAINING, key, value))) == []


def test_max_update_is_free_when_the_schedule_does_not_follow_it():
    fixed = changed(PRETRAINING, "optimizer.groups.default.lr_scheduler", {"_name": "fixed"})
    assert config_changes(fixed, OmegaConf.create(changed(fixed, "optimization.max_update", 300))) == []
    own_length = changed(PRETRAINING, "optimizer.groups.default.lr_scheduler", {**COSINE, "max_update": 1000})
    assert config_changes(own_length, OmegaConf.create(changed(own_length, "optimization.max_update", 300))) == []


def test_a_setting_the_checkpoint_predates_counts_only_when_set():
    current = changed(PRETRAINING, "model.new_switch", False)
    assert config_changes(PRETRAINING, OmegaConf.create(current)) == []
    (change,) = config_changes(PRETRAINING, OmegaConf.create(changed(PRETRAINING, "model.new_switch", 3)))
    assert str(change) == "model.new_switch: checkpoint: (not set), now: 3"


def summary(cfg: dict) -> CheckpointSummary:
    return CheckpointSummary("/run/checkpoints/checkpoint_last.pt", 6, 1, cfg)


def test_the_refusal_lists_every_change_and_the_override():
    now = OmegaConf.create(changed(changed(PRETRAINING, "common.seed", 5), "task.target_length", 512))
    with pytest.raises(ChangedConfigError) as refused:
        check_config_changes(now, summary(PRETRAINING))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("/run/checkpoints/checkpoint_last.pt (update 6) was trained with other settings")
    assert "common.seed: checkpoint: 1, now: 5" in message and "task.target_length: checkpoint: 128, now: 512" in message
    assert "task.accept_config_changes=true" in message
    assert check_config_changes(now, None) == []  # a first launch (scratch or continue_once) compares nothing


def test_the_override_continues_and_logs_the_changes(caplog):
    now = OmegaConf.create(changed(changed(PRETRAINING, "common.seed", 5), "task.accept_config_changes", True))
    with caplog.at_level(logging.WARNING):
        (change,) = check_config_changes(now, summary(PRETRAINING))
    assert change.key == "common.seed"
    assert "task.accept_config_changes=true: continuing /run/checkpoints/checkpoint_last.pt (update 6) " \
           "with 1 changed setting(s): common.seed: checkpoint: 1, now: 5" in caplog.text


# ---------------------------------------------------------------- end to end
OVERRIDES = ["task.data=data/manifests", "dataset.batch_size=4", "dataset.num_workers=0", "task.target_length=128",
             "common.log_interval=1", "checkpoint.save_interval_updates=0"]


def test_a_relaunch_with_changed_settings_is_refused_then_accepted_with_the_override(demo_data):
    run_dir = demo_data / "relaunch_changes"
    first = hydra_train("pretrain", "demo_stage1", [*OVERRIDES, f"hydra.run.dir={run_dir}",
                                                    "optimization.max_update=3"], demo_data)
    assert first.returncode == 0, first.stderr[-3000:]
    last = run_dir / "checkpoints" / "checkpoint_last.pt"
    before = last.stat().st_mtime_ns

    changes = ["optimization.max_update=5", "common.seed=5", "model.clone_batch=8", "optimization.lr=[0.005]"]
    refused = hydra_train("pretrain", "demo_stage1", [*OVERRIDES, f"hydra.run.dir={run_dir}", *changes], demo_data)
    log = refused.stdout + refused.stderr
    assert refused.returncode == LAUNCH_REFUSED_EXIT_STATUS, log[-3000:]
    assert "Traceback" not in log
    (line,) = [line for line in log.splitlines() if "was trained with other settings" in line]
    for expected in ("common.seed: checkpoint: 1, now: 5", "model.clone_batch: checkpoint: 4, now: 8",
                     "optimization.lr: checkpoint: [0.0005], now: [0.005]",
                     "optimization.max_update: checkpoint: 3, now: 5", "task.accept_config_changes=true"):
        assert expected in line, line
    assert last.stat().st_mtime_ns == before  # nothing trained

    accepted = hydra_train("pretrain", "demo_stage1", [*OVERRIDES, f"hydra.run.dir={run_dir}", *changes,
                                                       "++task.accept_config_changes=true"], demo_data)
    log = accepted.stdout + accepted.stderr
    assert accepted.returncode == 0, log[-3000:]
    assert "task.accept_config_changes=true: continuing" in log and "common.seed: checkpoint: 1, now: 5" in log
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 5
    assert state["cfg"]["common"]["seed"] == 5  # the next relaunch compares with the accepted settings



def test_the_classifiers_recorded_encoder_is_not_a_change():
    """A fine-tuning run records model_path's encoder in its config (all fields, the real shape); the
    relaunch's recipe still says ViT-B. That is the same run; for pre-training the encoder is compared."""
    recorded = changed(FINETUNING, "model.encoder", {"embed_dim": 192, "depth": 2, "num_heads": 3, "end_drop_path": 0.1})
    assert config_changes(recorded, OmegaConf.create(FINETUNING)) == []
    pretraining = changed(PRETRAINING, "model.encoder", {**PRETRAINING["model"]["encoder"], "end_drop_path": 0.1})
    assert [c.key for c in config_changes(pretraining, OmegaConf.create(PRETRAINING))] == ["model.encoder.end_drop_path"]
