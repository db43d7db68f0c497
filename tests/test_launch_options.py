"""The launch settings (sslam_plugin.training.launch_options): one declaration, checked before any process starts."""

from __future__ import annotations

import pytest

from conftest import hydra_train

pytest.importorskip("fairseq")

from omegaconf import OmegaConf  # noqa: E402

from sslam_plugin.training.classification_task import ClassificationTaskConfig  # noqa: E402
from sslam_plugin.training.launch_options import (  # noqa: E402
    LaunchOptions,
    PretrainingLaunchOptions,
    apply_launch_options,
    check_launch_options,
    threads_per_process,
)
from sslam_plugin.training.launch_refusals import LAUNCH_REFUSED_EXIT_STATUS, LaunchOptionsError  # noqa: E402
from sslam_plugin.training.task import SSLAMPretrainingTaskConfig  # noqa: E402


def config(effective=None, failed_clips_dir=None, batch_size=4, update_freq=(1,), pretraining=True):
    task = {"effective_batch_size": effective}
    if pretraining:
        task["failed_clips_dir"] = failed_clips_dir
    return OmegaConf.create({"task": task, "dataset": {"batch_size": batch_size},
                             "optimization": {"update_freq": list(update_freq)},
                             "checkpoint": {"save_dir": "/run/checkpoints"}})


def test_the_settings_are_declared_once_and_composed_into_both_tasks():
    for options, task in ((PretrainingLaunchOptions, SSLAMPretrainingTaskConfig), (LaunchOptions, ClassificationTaskConfig)):
        assert issubclass(task, options)
        for name in {"effective_batch_size", "failed_clips_dir"} & set(options.__dataclass_fields__):
            assert task.__dataclass_fields__[name] is options.__dataclass_fields__[name]  # the one declaration
    assert "failed_clips_dir" not in ClassificationTaskConfig.__dataclass_fields__  # it lists no failed clips


@pytest.mark.parametrize("value", [0, -48, "many", True, 2.5])
def test_an_effective_batch_no_process_could_run_with_is_refused_naming_the_key(value):
    with pytest.raises(LaunchOptionsError, match=r"^task\.effective_batch_size=.*: clips per optimiser update .* "
                                                 r"must be a whole number >= 1$"):
        check_launch_options(config(value))


def test_the_launcher_derives_update_freq_and_the_failed_clips_folder():
    cfg = config(48, batch_size=12)
    assert apply_launch_options(cfg, 2) == 48
    assert list(cfg.optimization.update_freq) == [2] and cfg.task.failed_clips_dir == "/run/checkpoints"
    cfg = config(48, batch_size=12, pretraining=False)
    apply_launch_options(cfg, 4)
    assert list(cfg.optimization.update_freq) == [1] and "failed_clips_dir" not in cfg.task
    with pytest.raises(LaunchOptionsError, match=r"task\.effective_batch_size=50 clips per update cannot be split"):
        apply_launch_options(config(50, batch_size=4), 4)


def test_a_failed_clips_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "list").write_text("")
    with pytest.raises(LaunchOptionsError, match=r"task\.failed_clips_dir=.*list' is a file, not a folder"):
        check_launch_options(config(None, failed_clips_dir=str(tmp_path / "list")))


@pytest.mark.parametrize("value, expected", [("4", 4), (" 2 ", 2), ("", None)])
def test_the_thread_share_is_checked(value, expected):
    assert threads_per_process({"OMP_NUM_THREADS": value}) == expected
    with pytest.raises(LaunchOptionsError, match=r"^OMP_NUM_THREADS='0': torch threads per process"):
        threads_per_process({"OMP_NUM_THREADS": "0"})


@pytest.mark.parametrize("value", ["0", "-48", "50"])
def test_fairseq_hydra_train_refuses_a_bad_effective_batch_before_any_process_starts(value, demo_data):
    run_dir = demo_data / f"refused_{value.lstrip('-')}"
    result = hydra_train("pretrain", "demo_stage1", [
        "task.data=data/manifests", "common.cpu=true", "distributed_training.distributed_world_size=2",
        "dataset.batch_size=4", "dataset.num_workers=0", f"task.effective_batch_size={value}", f"hydra.run.dir={run_dir}",
    ], cwd=demo_data)
    log = result.stdout + result.stderr
    assert result.returncode == LAUNCH_REFUSED_EXIT_STATUS, log[-3000:]
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"task.effective_batch_size={value}" in errors[0], log[-3000:]
    assert "Traceback" not in log
    # no rank was started: nothing was spawned, no rank built a task or wrote a checkpoint folder
    assert "data parallel:" not in log and "fairseq_cli.train" not in log
    assert not (run_dir / "checkpoints").exists()
