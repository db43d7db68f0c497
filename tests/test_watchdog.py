"""A rank that stops making progress ends the job with its stack written down, instead of hanging it.

Unit tests run a watchdog in a child process (it ends its process); the end-to-end test freezes one
of two CPU ranks of fairseq-hydra-train with SIGSTOP.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sslam_plugin.training import watchdog
from sslam_plugin.training.watchdog import WATCHDOG_EXIT_STATUS

SLACK_S = 60  # generous: two shared cores, a launcher's reporting and teardown


def run_script(body: str, tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``body`` (with ``folder``, ``Watchdog`` and ``time`` defined) in a fresh interpreter."""
    # The module alone, by its file (plain Python): importing the package would import fairseq.
    script = textwrap.dedent(f"""\
        import importlib.util, logging, time
        spec = importlib.util.spec_from_file_location("watchdog", {watchdog.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        Watchdog = module.Watchdog
        """)
    script += "logging.basicConfig(level=logging.INFO)\n"
    script += f"folder = {str(tmp_path / 'stalled')!r}\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- unit
def test_a_rank_without_progress_writes_its_stack_and_exits_with_the_watchdog_status(tmp_path):
    started = time.monotonic()
    result = run_script(
        """
        def stuck_in_a_collective():
            time.sleep(120)

        dog = Watchdog(rank=3, timeout_s=1.0, folder=folder, interval_s=0.05).start()
        dog.progress(1)
        dog.progress(2)
        stuck_in_a_collective()
        """,
        tmp_path,
    )
    assert result.returncode == WATCHDOG_EXIT_STATUS, result.stderr
    assert time.monotonic() - started < 1.0 + SLACK_S
    stack = (tmp_path / "stalled" / "rank3.txt").read_text()
    assert "rank 3, pid" in stack and "no progress for" in stack and "after update 2" in stack
    assert "in stuck_in_a_collective" in stack  # the main thread's frame, written by the watchdog thread
    stack_file = re.escape(str(tmp_path / "stalled" / "rank3.txt"))
    assert re.search(rf"watchdog: rank 3 \(pid \d+, .*\) stalled after update 2 .*its Python stack is in {stack_file}"
                     rf".*exiting with status {WATCHDOG_EXIT_STATUS}", result.stderr)


def test_validation_saving_and_the_time_before_the_first_update_never_count(tmp_path):
    result = run_script(
        """
        dog = Watchdog(rank=0, timeout_s=0.5, folder=folder, interval_s=0.05).start()
        time.sleep(1.5)  # building the model, loading data: no update yet
        dog.progress(1)
        with dog.paused():  # a long validation or checkpoint save
            time.sleep(1.5)
        dog.progress(2)
        dog.stop()
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "stalled").exists()


def test_time_the_whole_process_spent_suspended_is_no_stall(tmp_path):
    script = tmp_path / "suspended.py"
    script.write_text(textwrap.dedent(f"""\
        import importlib.util, sys, time
        spec = importlib.util.spec_from_file_location("watchdog", {watchdog.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dog = module.Watchdog(rank=0, timeout_s=1.0, folder={str(tmp_path / 'stalled')!r}, interval_s=0.05).start()
        dog.progress(1)
        print("ready", flush=True)
        sys.stdin.readline()  # SIGSTOPped here, for longer than the timeout
        time.sleep(0.5)
        dog.progress(2)
        dog.stop()
        """))
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        os.kill(child.pid, signal.SIGSTOP)  # as scontrol suspend does to a whole job
        time.sleep(2.5)
        os.kill(child.pid, signal.SIGCONT)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
    assert not (tmp_path / "stalled").exists()


def test_a_stop_signal_that_no_update_can_honour_ends_the_rank_as_resumable(tmp_path):
    result = run_script(
        """
        stop = []
        dog = Watchdog(rank=1, timeout_s=100, folder=folder, interval_s=0.05, stop_grace_s=0.5,
                       stop_requested=lambda: stop[0] if stop else None).start()
        dog.progress(4)
        stop.append("SIGUSR2")
        time.sleep(60)  # a frozen peer: the next update never comes
        """,
        tmp_path,
    )
    assert result.returncode == 75, result.stderr  # long before the 100 s stall timeout
    assert "SIGUSR2 received, but no update finished" in result.stderr
    assert "SIGUSR2" in (tmp_path / "stalled" / "rank1.txt").read_text()


def test_the_timeout_comes_from_the_environment_and_a_bad_value_names_the_variable():
    assert watchdog.timeout_from_env({}) == watchdog.DEFAULT_TIMEOUT_S == 600
    assert watchdog.timeout_from_env({"SSLAM_WATCHDOG_TIMEOUT_S": "0"}) == 0  # off
    assert watchdog.timeout_from_env({"SSLAM_WATCHDOG_TIMEOUT_S": "90"}) == 90
    for bad in ("-1", "ten", "nan"):
        with pytest.raises(ValueError, match="SSLAM_WATCHDOG_TIMEOUT_S"):
            watchdog.timeout_from_env({"SSLAM_WATCHDOG_TIMEOUT_S": bad})


def test_the_launcher_names_and_kills_a_frozen_rank_and_leaves_the_others(tmp_path, caplog):
    frozen = subprocess.Popen(["sleep", "60"])
    waiting = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(frozen.pid, signal.SIGSTOP)
        while watchdog.process_state(frozen.pid) != "T" or watchdog.process_state(waiting.pid) != "S":
            time.sleep(0.01)
        with caplog.at_level(logging.ERROR, logger=watchdog.__name__):
            found = watchdog.report_stalled_ranks({0: 999999, 1: frozen.pid, 2: waiting.pid},
                                                  {0: WATCHDOG_EXIT_STATUS, 1: None, 2: None}, str(tmp_path))
        assert found == [1]
        assert frozen.wait(timeout=10) == -signal.SIGKILL
        assert waiting.poll() is None
        assert f"rank 1 (pid {frozen.pid}) is stopped by a signal" in caplog.text
        assert f"rank 0 (pid 999999) made no progress; its stack: {tmp_path / 'rank0.txt'}" in caplog.text
        assert "stalled rank(s) 1;" in caplog.text and f"exit status {WATCHDOG_EXIT_STATUS}" in caplog.text
    finally:
        for process in (frozen, waiting):
            process.kill()
            process.wait()


def _rank_that_ends(index: int, status: int) -> None:
    """Rank 0 ends with ``status`` after a moment; rank 1 freezes."""
    if index == 1:
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    time.sleep(1)  # rank 1 has frozen by then
    os._exit(status)


@pytest.mark.parametrize("status", [WATCHDOG_EXIT_STATUS, 75])
def test_the_launcher_ends_every_rank_with_the_status_of_the_rank_that_ended_the_job(status, tmp_path, monkeypatch,
                                                                                    caplog):
    import torch.multiprocessing

    from sslam_plugin.training.processes import join_ranks

    monkeypatch.chdir(tmp_path)  # the run folder
    context = torch.multiprocessing.start_processes(_rank_that_ends, args=(status,), nprocs=2, join=False,
                                                    start_method="fork")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as ended:
        join_ranks(context, first_rank=0)
    assert ended.value.code == status
    assert time.monotonic() - started < SLACK_S  # torch's own join would wait 30 s for a frozen rank
    assert not any(p.is_alive() for p in context.processes)
    assert context.processes[1].exitcode == -signal.SIGKILL  # at once: a stopped process takes no SIGTERM
    assert f"rank 1 (pid {context.processes[1].pid}) is stopped by a signal" in caplog.text
    assert f"stalled rank(s) 1; the other ranks waited for them (stacks in {tmp_path / 'stalled'}); " \
           f"exit status {status}" in caplog.text
    if status == 75:
        assert "a rank stopped with status 75 (resumable): waiting for the others to stop" in caplog.text


def test_a_resumable_stop_waits_for_a_rank_still_saving(tmp_path, monkeypatch, caplog):
    """Rank 0 still writes the stop's checkpoint when rank 1 has ended with 75: it is waited for, not killed."""
    import torch.multiprocessing

    from sslam_plugin.training.processes import join_ranks

    monkeypatch.chdir(tmp_path)
    context = torch.multiprocessing.start_processes(_rank_still_saving, args=(str(tmp_path / "saved"),), nprocs=2,
                                                    join=False, start_method="fork")
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as ended:
        join_ranks(context, first_rank=0)
    assert ended.value.code == 75
    assert [p.exitcode for p in context.processes] == [75, 75]
    assert (tmp_path / "saved").read_text() == "checkpoint"  # the slow save was not cut short


def _rank_still_saving(index: int, marker: str) -> None:
    if index == 0:
        time.sleep(12)  # longer than the grace a stalled job gets
        with open(marker, "w") as f:
            f.write("checkpoint")
    os._exit(75)


# ----------------------------------------------------------------------- end to end
TIMEOUT_S = 15


def test_a_stopped_rank_ends_the_job_with_the_watchdog_status_and_the_others_stacks(demo_data):
    pytest.importorskip("fairseq")
    from test_run_ownership import TWO_PROCESSES, running, spawned_ranks, wait_for_update

    from conftest import hydra_train_command

    log = demo_data / "stalled_run.log"
    overrides = [*TWO_PROCESSES, "hydra.run.dir=stalled_run", "optimization.max_update=100000"]
    with open(log, "w") as handle:
        launcher = subprocess.Popen(
            hydra_train_command("pretrain", "demo_stage1", overrides),
            cwd=demo_data, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", SSLAM_WATCHDOG_TIMEOUT_S=str(TIMEOUT_S)),
        )
        try:
            wait_for_update(launcher, log, 2)
            ranks = spawned_ranks(launcher.pid)
            assert len(ranks) == 2, ranks
            stopped = ranks[1]
            os.kill(stopped, signal.SIGSTOP)
            frozen_at = time.monotonic()
            status = launcher.wait(timeout=TIMEOUT_S + SLACK_S)
            took = time.monotonic() - frozen_at
        finally:
            if launcher.poll() is None:  # a failed test leaves no training behind
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
    text = log.read_text()
    assert status == WATCHDOG_EXIT_STATUS, text[-5000:]
    assert took < TIMEOUT_S + SLACK_S

    named = re.search(rf"watchdog: rank (\d) \(pid {stopped}\) is stopped by a signal \(SIGSTOP or job control\) "
                      r"\(state T\): it stalled the job; killing it", text)
    assert named, text[-5000:]
    healthy = 1 - int(named.group(1))
    assert f"stalled rank(s) {named.group(1)};" in text
    stack = (demo_data / "stalled_run" / "stalled" / f"rank{healthy}.txt").read_text()
    assert f"rank {healthy}, pid" in stack and "no progress for" in stack
    assert "fairseq_cli/train.py" in stack  # where the healthy rank waited for its frozen peer
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in ranks if running(pid)], "a rank outlived the job"
