"""``sslam-train`` (sslam_plugin.cli.train): fairseq-hydra-train with stop signals handled from the first instant."""

from __future__ import annotations

import importlib.util
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
    # hydra's and fairseq's start-up lines (printed before the run's log exists) are in the run's log, not on
    # the terminal (fairseq prints its tensorboardX line only where tensorboardX is missing)
    run_log = (demo_data / "wrapped" / "hydra_train.log").read_text()
    missing_tensorboardx = importlib.util.find_spec("tensorboardX") is None
    for line in START_UP_LINES[: 3 if missing_tensorboardx else 2]:
        assert line not in log, log[:3000]
        assert line in run_log, run_log[:3000]
    assert run_log.index(START_UP_LINES[0]) < run_log.index("num_updates=1")  # written when the run starts


START_UP_LINES = (
    "The version_base parameter is not specified",  # hydra, when fairseq_cli.hydra_train is imported
    "'demo_stage1' is validated against ConfigStore schema with the same name",  # hydra, composing the recipe
    "Please install tensorboardX",  # fairseq, importing its text-to-speech task
)


def test_the_start_up_output_held_back_is_written_and_other_warnings_still_show(tmp_path, capsys):
    """In-process: what is held goes to the run's log file; other warnings and errors show as before."""
    import logging
    import warnings

    from sslam_plugin.cli import train

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = []
    shown_warnings = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *rest, **kw: shown_warnings.append(str(message))
            original = warnings.showwarning
            train.hold_start_up_output()
            logging.getLogger("fairseq.tasks.text_to_speech").info("Please install tensorboardX")
            logging.getLogger("fairseq.somewhere").error("a real error")
            warnings.warn("The version_base parameter is not specified.", UserWarning)
            warnings.warn("something else", UserWarning)
            assert shown_warnings == ["something else"]
            shown = capsys.readouterr().err
            assert "ERROR:fairseq.somewhere:a real error" in shown and "tensorboardX" not in shown
            root.handlers[:] = [logging.FileHandler(tmp_path / "run.log")]
            train.write_start_up_output()
            root.handlers[0].close()
            assert warnings.showwarning is original  # warnings show as before from here on
        written = (tmp_path / "run.log").read_text()
        assert "Please install tensorboardX" in written
        assert "The version_base parameter is not specified" in written
        assert "a real error" not in written and "something else" not in written
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
