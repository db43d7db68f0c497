"""Bad checkpoint files get one line naming the file and what it is (resume, checkpoint.continue_once, loading)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")

from omegaconf import OmegaConf  # noqa: E402

from conftest import hydra_train  # noqa: E402
from sslam_plugin.checkpoints import CorruptCheckpointError, load_checkpoint_file  # noqa: E402
from sslam_plugin.training.launch import LAUNCH_REFUSED_EXIT_STATUS  # noqa: E402
from sslam_plugin.training.checkpoint_summary import read_checkpoint_summary  # noqa: E402
from sslam_plugin.training.launch_refusals import (  # noqa: E402
    AnotherRunError,
    DamagedCheckpointError,
    WrongCheckpointError,
    dataloader_mismatch,
)
from sslam_plugin.training.resume import choose_checkpoint  # noqa: E402

RUN = {"task": {"_name": "sslam_pretraining", "data": "/data"}, "model": {"_name": "sslam_pretraining", "mixing": {"enabled": True}}}


def pretraining_checkpoint(path: Path, updates: int = 3, continue_once=None, seed: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "model": {"blocks.0.attn.qkv.weight": torch.full((8,), seed), "modality_encoders.IMAGE.decoder.proj.weight": torch.zeros(2)},
        "optimizer_history": [{"num_updates": updates}],
        "extra_state": {"train_iterator": {"epoch": 1}},
        "cfg": {**RUN, "checkpoint": {"continue_once": continue_once}},
    }, path)
    return path


def finetuned_checkpoint(path: Path) -> Path:
    torch.save({
        "model": {"model.blocks.0.attn.qkv.weight": torch.zeros(8), "head.weight": torch.zeros(2, 8)},
        "optimizer_history": [{"num_updates": 10}],
        "cfg": {"task": {"_name": "sslam_classification"}, "model": {"_name": "sslam_classifier"}},
    }, path)
    return path


def bad_file(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_bytes(b"hello\n")
    elif kind == "random":
        path.write_bytes(bytes(range(7, 256)) * 16)
    elif kind == "truncated":
        whole = pretraining_checkpoint(folder / "whole.pt").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    return path


KINDS = {
    "empty": "an empty file (0 bytes)",
    "text": "not a PyTorch checkpoint: a text file (6 bytes) starting 'hello\\n'",
    "random": "not a PyTorch checkpoint: 3984 bytes of other data",
    "truncated": "a truncated PyTorch checkpoint (",
}


def one_line_without_unpickling_advice(message: str) -> None:
    assert "\n" not in message
    assert "weights_only" not in message and "arbitrary code" not in message


@pytest.mark.parametrize("kind", KINDS)
def test_each_unreadable_file_is_named_and_described(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    with pytest.raises(DamagedCheckpointError) as summary_error:
        read_checkpoint_summary(str(path))
    with pytest.raises(CorruptCheckpointError) as load_error:
        load_checkpoint_file(path)
    for err in (summary_error.value, load_error.value):
        assert str(err).startswith(f"{path}: {KINDS[kind]}"), str(err)
        one_line_without_unpickling_advice(str(err))


def config(tmp_path: Path, continue_once) -> OmegaConf:
    return OmegaConf.create({**RUN, "checkpoint": {
        "save_dir": str(tmp_path / "checkpoints"), "restore_file": "checkpoint_last.pt", "continue_once": continue_once,
        "checkpoint_suffix": "", "reset_optimizer": False, "reset_lr_scheduler": False, "reset_meters": False,
        "reset_dataloader": False,
    }})


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_continue_once_is_refused_before_training(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    with pytest.raises(DamagedCheckpointError) as refused:
        choose_checkpoint(config(tmp_path, str(path)))
    assert str(refused.value).startswith(f"checkpoint.continue_once={path}: {KINDS[kind]}")
    one_line_without_unpickling_advice(str(refused.value))


def test_an_empty_checkpoint_last_without_another_is_described(tmp_path):
    last = bad_file(tmp_path, "empty")
    (tmp_path / "checkpoints").mkdir()
    shutil.move(last, tmp_path / "checkpoints" / "checkpoint_last.pt")
    with pytest.raises(DamagedCheckpointError, match=r"checkpoint_last.pt: an empty file \(0 bytes\).*holds no other intact"):
        choose_checkpoint(config(tmp_path, None))


def test_a_fine_tuned_checkpoint_cannot_continue_pre_training(tmp_path):
    path = finetuned_checkpoint(tmp_path / "finetuned.pt")
    with pytest.raises(WrongCheckpointError, match=rf"checkpoint.continue_once={path}: a fine-tuned classifier checkpoint"):
        choose_checkpoint(config(tmp_path, str(path)))


def test_a_copied_or_moved_stage1_file_is_the_same_start(tmp_path):
    stage1 = pretraining_checkpoint(tmp_path / "stage1.pt", seed=1.0)
    assert choose_checkpoint(config(tmp_path, str(stage1))) is None  # first launch: records the file's hash
    pretraining_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt", 7, continue_once=str(stage1))

    copy = tmp_path / "elsewhere" / "stage1_copy.pt"
    copy.parent.mkdir()
    shutil.copy(stage1, copy)
    assert choose_checkpoint(config(tmp_path, str(copy))).num_updates == 7
    os.remove(stage1)  # moved: the hash recorded at the first launch still recognises it
    assert choose_checkpoint(config(tmp_path, str(copy))).num_updates == 7

    other = pretraining_checkpoint(tmp_path / "other_stage1.pt", seed=2.0)
    with pytest.raises(AnotherRunError, match="contents differ: relaunch with the checkpoint's checkpoint.continue_once"):
        choose_checkpoint(config(tmp_path, str(other)))


def test_fairseqs_dataloader_mismatch_names_the_hydra_key():
    err = RuntimeError("Cannot resume training due to dataloader mismatch, please report this to the fairseq "
                       "developers. You can relaunch training with `--reset-dataloader` and it should work.")
    cfg = OmegaConf.create({"checkpoint": {"save_dir": "/run/checkpoints", "restore_file": "checkpoint_last.pt"},
                            "task": {"data": "/data"}})
    message = str(dataloader_mismatch(err, cfg))
    assert message.startswith("/run/checkpoints/checkpoint_last.pt: its position in the epoch does not fit")
    assert "checkpoint.reset_dataloader=true" in message and "--reset-dataloader" not in message
    assert dataloader_mismatch(RuntimeError("other"), cfg) is None


def test_reset_dataloader_is_kept_on_a_stage2_relaunch(tmp_path):
    stage1 = pretraining_checkpoint(tmp_path / "stage1.pt")
    pretraining_checkpoint(tmp_path / "checkpoints" / "checkpoint_last.pt", 7, continue_once=str(stage1))
    cfg = config(tmp_path, str(stage1))
    cfg.checkpoint.reset_dataloader = cfg.checkpoint.reset_optimizer = True
    choose_checkpoint(cfg)
    assert cfg.checkpoint.reset_dataloader and not cfg.checkpoint.reset_optimizer


def test_a_bad_continue_once_stops_the_launch_with_one_line(demo_data, tmp_path):
    empty = bad_file(tmp_path, "empty")
    result = hydra_train("pretrain", "demo_stage1", [
        "task.data=data/manifests", f"hydra.run.dir={tmp_path / 'run'}", f"+checkpoint.continue_once={empty}",
        "dataset.num_workers=0", "task.target_length=128",
    ], demo_data)
    log = result.stdout + result.stderr
    assert result.returncode == LAUNCH_REFUSED_EXIT_STATUS, log[-3000:]
    assert "Traceback" not in log
    assert f"checkpoint.continue_once={empty}: an empty file (0 bytes)" in log


def test_an_official_checkpoint_in_the_run_folder_is_named_as_such(tmp_path):
    torch.save({"model": {"modality_encoders.IMAGE.local_encoder.proj.weight": torch.zeros(2)},
                "cfg": {"task": {"_name": "mae_image_pretraining"}, "model": {"_name": "data2vec_multi"}}},
               (tmp_path / "checkpoints").mkdir() or tmp_path / "checkpoints" / "checkpoint_last.pt")
    with pytest.raises(AnotherRunError, match=r"checkpoint_last.pt: an official EAT/SSLAM checkpoint \(model 'data2vec_multi'\)"):
        choose_checkpoint(config(tmp_path, None))


# ------------------------------------------------- full disk, signals at start-up (the launch's other one-liners)
def test_a_full_disk_is_refused_before_training_and_partial_saves_are_removed(tmp_path, monkeypatch):
    import collections

    import sslam_plugin.training.launch_refusals as refusals

    folder = tmp_path / "checkpoints"
    pretraining_checkpoint(folder / "checkpoint_last.pt", 6)
    (folder / "checkpoint_last.pt.tmp").write_bytes(b"")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(refusals.shutil, "disk_usage", lambda path: usage(100, 100, 10))
    with pytest.raises(refusals.DiskFullError, match=r"checkpoints: 0 MiB free, but the next checkpoint needs about "
                                                   r"0 MiB \(the size of checkpoint_last.pt\).*resume from update 6"):
        choose_checkpoint(config(tmp_path, None))
    assert not (folder / "checkpoint_last.pt.tmp").exists()


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_partial_file(tmp_path):
    import errno

    from sslam_plugin.training.launch_refusals import disk_full

    (tmp_path / "checkpoint_last.pt.tmp").write_bytes(b"")
    cfg = OmegaConf.create({"checkpoint": {"save_dir": str(tmp_path)}})
    err = disk_full(OSError(errno.ENOSPC, "No space left on device"), cfg)
    assert "the save failed; the run's last complete checkpoint" in str(err) and "\n" not in str(err)
    assert not (tmp_path / "checkpoint_last.pt.tmp").exists()
    assert disk_full(OSError(errno.EACCES, "denied"), cfg) is None


def test_a_stop_signal_during_start_up_exits_75_with_a_log_line(caplog):
    import signal

    from sslam_plugin.training import preemption

    previous = signal.getsignal(signal.SIGUSR2)
    try:
        preemption.stop_during_start_up()
        with pytest.raises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(5)  # the handler runs before this returns
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stopped.value.code == preemption.RESUMABLE_EXIT_STATUS
    assert "SIGUSR2 during start-up, before training: stopping now" in caplog.text


def test_a_second_ctrl_c_after_the_save_lets_the_run_end_with_75(monkeypatch):
    from sslam_plugin.training import preemption

    monkeypatch.setattr(preemption, "_requested", "SIGINT")
    monkeypatch.setattr(preemption, "_first_interrupt", None)
    monkeypatch.setattr(preemption, "_saved", True)
    preemption.record_interrupt()  # neither KeyboardInterrupt (an exit by SIGINT) nor a traceback: the run ends with 75
    assert preemption.requested_signal() == "SIGINT"
