"""Which checkpoint a launch starts from (sslam_plugin.training.resume) on hand-made checkpoint files."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")

from omegaconf import OmegaConf  # noqa: E402

from sslam_plugin.training.checkpoint_summary import read_checkpoint_summary  # noqa: E402
from sslam_plugin.training.launch_refusals import ChangedConfigError, DamagedCheckpointError  # noqa: E402
from sslam_plugin.training.relaunch_changes import check_config_changes  # noqa: E402
from sslam_plugin.training.resume import choose_checkpoint  # noqa: E402

RUN = {"task": {"_name": "sslam_pretraining", "data": "/data"}, "model": {"_name": "sslam_pretraining", "mixing": {"enabled": True}}}


def write_checkpoint(path: Path, updates: int, epoch: int = 1, cfg: dict = None, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": {"w": torch.full((64,), float(updates))},
        "optimizer_history": [{"num_updates": updates}],
        "extra_state": {"train_iterator": {"epoch": epoch}},
        "cfg": cfg if cfg is not None else {**RUN, "checkpoint": {"continue_once": "/stage1.pt"}},
        **extra,
    }
    torch.save(state, path)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def config(tmp_path: Path, continue_once="/stage1.pt"):
    ckpt = {
        "save_dir": str(tmp_path / "checkpoints"),
        "restore_file": "checkpoint_last.pt",
        "continue_once": continue_once,
        "checkpoint_suffix": "",
        "reset_optimizer": False,
        "reset_lr_scheduler": False,
        "reset_meters": False,
        "reset_dataloader": False,
    }
    return OmegaConf.create({**RUN, "checkpoint": ckpt})


RESETS = ("reset_optimizer", "reset_lr_scheduler", "reset_meters", "reset_dataloader")


def test_continue_once_resets_on_the_first_launch_only(tmp_path):
    write_checkpoint(tmp_path / "stage1.pt", 0)
    cfg = config(tmp_path, continue_once=str(tmp_path / "stage1.pt"))
    assert choose_checkpoint(cfg) is None
    assert all(cfg.checkpoint[flag] for flag in RESETS)

    cfg = config(tmp_path, continue_once=str(tmp_path / "stage1.pt"))
    write_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt", 7, 2,
                     cfg={**RUN, "checkpoint": {"continue_once": str(tmp_path / "stage1.pt")}})
    resumed = choose_checkpoint(cfg)
    assert (resumed.num_updates, resumed.epoch) == (7, 2)
    assert not any(cfg.checkpoint[flag] for flag in RESETS)
    assert cfg.checkpoint.restore_file == "checkpoint_last.pt"


def test_missing_continue_once_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.continue_once='/nowhere/stage1.pt'"):
        choose_checkpoint(config(tmp_path, continue_once="/nowhere/stage1.pt"))


def test_damaged_last_falls_back_to_the_intact_checkpoint_with_most_updates(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    last = write_checkpoint(folder / "checkpoint_last.pt", 9)
    truncate(last)
    write_checkpoint(folder / "checkpoint_1_8.pt", 8)
    truncate(write_checkpoint(folder / "checkpoint_1_9.pt", 9))
    write_checkpoint(folder / "checkpoint_best.pt", 5)
    cfg = config(tmp_path)
    with caplog.at_level(logging.WARNING):
        resumed = choose_checkpoint(cfg)
    assert resumed.num_updates == 8
    assert cfg.checkpoint.restore_file == str(folder / "checkpoint_1_8.pt")
    assert not any(cfg.checkpoint[flag] for flag in RESETS)  # resuming, not starting over
    assert f"{last}: " in caplog.text and "checkpoint_1_8.pt instead" in caplog.text
    assert "skipping damaged checkpoint" in caplog.text and "checkpoint_1_9.pt" in caplog.text


def test_damaged_last_without_an_intact_one_stops_with_the_way_out(tmp_path):
    truncate(write_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt", 3))
    with pytest.raises(DamagedCheckpointError, match="holds no other intact checkpoint: move .*checkpoint_last.pt away"):
        choose_checkpoint(config(tmp_path))


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    write_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt", 4,
                     cfg={**RUN, "checkpoint": {"continue_once": "/other_stage1.pt"}})
    with pytest.raises(ValueError, match="checkpoint.continue_once: '/other_stage1.pt' in the checkpoint, '/stage1.pt' now"):
        choose_checkpoint(config(tmp_path))


def test_moved_data_is_another_experiment_unless_accepted(tmp_path):
    moved = {**RUN, "task": {"_name": "sslam_pretraining", "data": "/old/data"}, "checkpoint": {"continue_once": "/stage1.pt"}}
    write_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt", 4, cfg=moved)
    cfg = config(tmp_path)
    resumed = choose_checkpoint(cfg)
    assert resumed.num_updates == 4
    with pytest.raises(ChangedConfigError, match="task.data: checkpoint: '/old/data', now: '/data'"):
        check_config_changes(cfg, resumed)


def test_relative_paths_resolve_against_the_launch_and_run_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path, continue_once=None)
    cfg.checkpoint.save_dir = "checkpoints"
    cfg.checkpoint.restore_file = "elsewhere/checkpoint_9.pt"
    choose_checkpoint(cfg)
    assert cfg.checkpoint.save_dir == str(tmp_path / "checkpoints")
    assert cfg.checkpoint.restore_file == os.path.join(str(tmp_path), "elsewhere/checkpoint_9.pt")


def test_summary_of_an_old_checkpoint_that_needs_the_full_unpickler(tmp_path):
    path = write_checkpoint(tmp_path / "old.pt", 3, args=argparse.Namespace(arch="x"))
    summary = read_checkpoint_summary(str(path))
    assert summary.cfg is None  # intact: not treated as damaged
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(DamagedCheckpointError, match="not a fairseq checkpoint"):
        read_checkpoint_summary(str(tmp_path / "plain.pt"))
