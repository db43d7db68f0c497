"""``sslam-train`` (sslam_plugin.cli.train): fairseq-hydra-train with stop signals handled from the first instant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytest.importorskip("fairseq")

TRAIN = [sys.executable, "-m", "sslam_plugin.cli.train"]


def handles(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    return bool(caught >> (sig - 1) & 1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stop_signal_while_fairseq_is_still_importing_ends_resumable_with_a_log_line(tmp_path):
    command = TRAIN + ["--config-dir", str(REPO / "config" / "pretrain"), "--config-name", "demo_stage1",
                       "task.data=/nowhere", f"hydra.run.dir={tmp_path / 'run'}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    while not handles(process.pid, signal.SIGUSR2) and process.poll() is None:
        time.sleep(0.001)  # the first thing the command does; the imports take seconds after it
    process.send_signal(signal.SIGUSR2)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 75, out[-3000:]
    lines = [line for line in out.splitlines() if "SIGUSR2 during start-up, before training: stopping now" in line]
    assert len(lines) == 1 and "exit status 75" in lines[0], out[-3000:]
    assert "Traceback" not in out
    assert not (tmp_path / "run").exists()  # stopped before hydra started the run


def test_the_command_stops_on_the_signals_the_training_handles(monkeypatch):
    from sslam_plugin.cli.train import stop_signals
    from sslam_plugin.training.preemption import STOP_SIGNALS, _stop_signals

    assert stop_signals({}) == list(STOP_SIGNALS) or os.environ.get("SUBMITIT_PREEMPT_SIGNAL")
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "URG")
    assert stop_signals(os.environ) == list(_stop_signals()) and signal.SIGURG in stop_signals(os.environ)


def test_the_command_trains_as_fairseq_hydra_train_does(demo_data):
    result = subprocess.run(TRAIN + [
        "--config-dir", str(REPO / "config" / "pretrain"), "--config-name", "demo_stage1", "task.data=data/manifests",
        "hydra.run.dir=wrapped", "dataset.batch_size=4", "task.target_length=128", "optimization.max_update=2",
        "common.log_interval=1",
    ], cwd=demo_data, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "num_updates=2" in log and (demo_data / "wrapped" / "checkpoints" / "checkpoint_last.pt").is_file()
