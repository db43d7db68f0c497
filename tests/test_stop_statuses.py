"""How a run ends when the user or the disk stops it: a second Ctrl-C after the stop's save ends the
launcher with 75 (two CPU processes), and a full disk during a save is one line, without fairseq's
traceback or a partial file."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import hydra_train_command

pytest.importorskip("fairseq")

from omegaconf import OmegaConf  # noqa: E402

from sslam_plugin.training.launch_refusals import LAUNCH_REFUSED_EXIT_STATUS, DiskFullError  # noqa: E402
from sslam_plugin.training.preemption import RESUMABLE_EXIT_STATUS  # noqa: E402


def _wait_for(log: Path, text: str, count: int, process: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while log.read_text(errors="replace").count(text) < count:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in the log: " + log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_second_ctrl_c_after_the_stops_save_ends_the_launcher_with_75(demo_data):
    overrides = ["task.data=data/manifests", "common.cpu=true", "distributed_training.distributed_world_size=2",
                 "dataset.batch_size=4", "dataset.num_workers=0", "task.target_length=128", "common.log_interval=1",
                 "optimization.max_update=500", "hydra.run.dir=ctrl_c"]
    log = demo_data / "ctrl_c.log"

    def default_sigint() -> None:  # a terminal's job: Ctrl-C reaches it (a background shell ignores SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with open(log, "w") as out:
        launcher = subprocess.Popen(hydra_train_command("pretrain", "demo_stage1", overrides), cwd=demo_data,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=default_sigint, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        _wait_for(log, "num_updates=", 1, launcher)
        os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C in the terminal: every process of the job
        _wait_for(log, "stopped at update", 2, launcher)  # both ranks saved the stop's checkpoint
        os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C again, after the save
        assert launcher.wait(timeout=300) == 75, log.read_text()[-3000:]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert (demo_data / "ctrl_c" / "checkpoints" / "checkpoint_last.pt").is_file()


def _save_on_a_full_disk(cfg) -> None:
    """A training ``main`` whose checkpoint save meets a full disk (the partial file's writes go to /dev/full)."""
    from fairseq import checkpoint_utils

    save_dir = Path(cfg.checkpoint.save_dir)
    (save_dir / "checkpoint_last.pt.tmp").symlink_to("/dev/full")
    checkpoint_utils.torch_persistent_save({"model": torch.zeros(1000)}, str(save_dir / "checkpoint_last.pt"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_while_saving_is_one_line_without_fairseqs_traceback(tmp_path, monkeypatch, caplog):
    from fairseq import checkpoint_utils

    from sslam_plugin.training.rank import run_rank

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoint_utils.time, "sleep", lambda s: None)  # fairseq retries a failed save twice
    cfg = OmegaConf.create({"checkpoint": {"save_dir": str(tmp_path)},
                            "distributed_training": {"distributed_init_method": None}})
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    try:
        with caplog.at_level(logging.INFO), pytest.raises(DiskFullError) as full:
            run_rank(0, lambda cfg: _save_on_a_full_disk(cfg), cfg, {}, 0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    message = str(full.value)
    assert full.value.errno == errno.ENOSPC and "\n" not in message
    assert f"no space left on the device of {tmp_path}" in message and "MiB free" in message
    assert "Traceback" not in caplog.text  # fairseq logs the save's traceback before raising: dropped
    assert not list(tmp_path.glob("*.tmp"))  # the partial save is gone


def _rank_refused(index: int) -> None:
    if index == 0:
        logging.getLogger("test").error("no space left on the device of /run: the save failed")
        os._exit(LAUNCH_REFUSED_EXIT_STATUS)
    time.sleep(60)  # rank 1 waits in a collective that rank 0 will never join


@pytest.mark.parametrize("ended_before_the_join", [False, True])
def test_a_rank_that_refused_ends_the_job_with_its_status(tmp_path, monkeypatch, caplog, ended_before_the_join):
    """The launcher ends the other ranks and exits with the refusal's status, also when the rank's end
    was seen (its exit status collected) before the launcher started waiting."""
    import torch.multiprocessing

    from sslam_plugin.training import processes
    from sslam_plugin.training.processes import join_ranks

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(processes, "RANK_END_GRACE_S", 1.0)
    context = torch.multiprocessing.start_processes(_rank_refused, nprocs=2, join=False, start_method="fork")
    if ended_before_the_join:
        while context.processes[0].exitcode is None:  # collects rank 0's status, as a look at the ranks does
            time.sleep(0.01)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as ended:
        join_ranks(context, first_rank=0)
    assert ended.value.code == LAUNCH_REFUSED_EXIT_STATUS
    assert not any(p.is_alive() for p in context.processes)
    # rank 1 was ended by the launcher, not left to finish its 60 s wait (status 0): killed by its
    # signal, or 75 where it inherited a stop handler (the ranks' own, installed in this process earlier)
    status = context.processes[1].exitcode
    assert status in (-signal.SIGTERM, -signal.SIGKILL, RESUMABLE_EXIT_STATUS), status
    assert "rank(s) 0 stopped (the reason is logged above); ending the others" in caplog.text
