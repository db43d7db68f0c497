"""One job owns a run folder: a second launch is refused, a killed launcher takes its ranks and its
lock with it, and the same command then resumes (fairseq-hydra-train on two CPU processes)."""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List

import pytest
import torch

from conftest import hydra_train_command, run

pytest.importorskip("fairseq")

from sslam_plugin.training.run_ownership import RUN_IN_USE_EXIT_STATUS, run_lock_folder  # noqa: E402
from sslam_plugin.training.topology import infer_topology, owns_the_run  # noqa: E402
from sslam_plugin.training.run_lock import LOCK_NAME  # noqa: E402

TWO_PROCESSES = [
    "task.data=data/manifests",  # relative to the launch folder
    "dataset.batch_size=4",
    "dataset.num_workers=0",
    "task.target_length=128",
    "common.log_interval=1",
    "common.cpu=true",
    "distributed_training.distributed_world_size=2",
]
MAX_UPDATE = 6  # one epoch of the small demo set on 2 processes x 4 clips


# ----------------------------------------------------------- which process owns the run
TORCHRUN = {"WORLD_SIZE": "8", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
SLURM = {"SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NNODES": "2"}


@pytest.mark.parametrize(
    "environ",
    [
        {},  # this machine: the launcher
        {**TORCHRUN, "RANK": "0", "LOCAL_RANK": "0"},
        {**TORCHRUN, "RANK": "5", "LOCAL_RANK": "1"},
        {**SLURM, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0"},
        {**SLURM, "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODEID": "1", "SLURM_PROCID": "1"},
        {**SLURM, "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"},
        {**SLURM, "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)", "SLURM_PROCID": "6", "SLURM_LOCALID": "2"},
        {"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n1", "SLURM_NNODES": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"},
    ],
)
def test_exactly_the_process_that_starts_rank_0_owns_the_run(environ):
    """One process per job takes the lock; the others never touch it (they could not wait for it)."""
    topology = infer_topology(1, cpu=False, backend="nccl", port=-1, environ=environ, device_count=4)
    starts_rank_0 = topology.first_rank + (0 if topology.spawn else topology.local_index) == 0
    assert owns_the_run(environ) == starts_rank_0


def test_a_rank_the_user_placed_does_not_own_the_run():
    assert owns_the_run({}, distributed_rank=0) and not owns_the_run({}, distributed_rank=3)


def test_the_lock_guards_the_folder_holding_the_checkpoints(tmp_path):
    assert run_lock_folder(str(tmp_path / "run"), str(tmp_path / "run" / "checkpoints")) == str(tmp_path / "run")
    assert run_lock_folder(str(tmp_path / "run"), "/elsewhere/ckpt") == "/elsewhere/ckpt"


# ----------------------------------------------------------------------- end to end
def start(cwd: Path, overrides: List[str], log: Path) -> subprocess.Popen:
    """fairseq-hydra-train in its own process group, output to ``log``."""
    handle = open(log, "w")
    process = subprocess.Popen(
        hydra_train_command("pretrain", "demo_stage1", overrides),
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        start_new_session=True,
    )
    process.log_handle = handle
    return process


def wait_for_update(process: subprocess.Popen, log: Path, update: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(rf"train_inner.*num_updates={update},", log.read_text()):
        assert process.poll() is None, log.read_text()[-5000:]
        assert time.monotonic() < deadline, f"update {update} not reached: {log.read_text()[-3000:]}"
        time.sleep(0.05)


def updates_in(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["optimizer_history"][-1]["num_updates"]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for a reaper that a container may lack)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def spawned_ranks(launcher: int) -> List[int]:
    """The launcher's children that run a rank (multiprocessing's spawn entry point)."""
    ranks = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == launcher and b"spawn_main" in cmdline:
            ranks.append(int(entry.name))
    return ranks


def test_a_second_launch_into_a_running_run_is_refused_and_the_run_ends_intact(demo_data):
    """The same 2-process command typed again while the first trains: refused before it reads any
    checkpoint; the first run trains every update once and ends at max_update."""
    overrides = [*TWO_PROCESSES, "hydra.run.dir=owned", f"optimization.max_update={MAX_UPDATE}"]
    first_log = demo_data / "owned_first.log"
    first = start(demo_data, overrides, first_log)
    try:
        wait_for_update(first, first_log, 2)
        os.killpg(first.pid, signal.SIGSTOP)  # keep the run in progress for as long as the second launch takes
        second = run(hydra_train_command("pretrain", "demo_stage1", overrides), cwd=demo_data)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first_log.read_text()[-5000:]
    first.log_handle.close()

    refusal = second.stdout + second.stderr
    assert second.returncode == RUN_IN_USE_EXIT_STATUS, refusal[-5000:]
    found = re.search(
        rf"run folder {re.escape(str(demo_data / 'owned'))} is in use by another launch "
        rf"\(host {re.escape(socket.gethostname())}, pid {first.pid}, started (\S+)\): wait for it to end .*"
        r"or start this one in another folder with hydra\.run\.dir=\.\.\.\n",
        refusal,
    )
    assert found, refusal[-5000:]
    datetime.datetime.fromisoformat(found.group(1))
    assert "resuming from" not in refusal and "train_inner" not in refusal

    log = first_log.read_text()
    updates = [int(u) for u in re.findall(r"train_inner.*num_updates=(\d+),", log)]
    assert updates == list(range(1, MAX_UPDATE + 1))  # each update once, by one job
    assert updates_in(demo_data / "owned" / "checkpoints" / "checkpoint_last.pt") == MAX_UPDATE
    assert (demo_data / "owned" / LOCK_NAME).read_text() == ""  # released at the end


def test_kill_9_of_the_launcher_ends_its_ranks_and_the_same_command_resumes(demo_data):
    overrides = [*TWO_PROCESSES, "hydra.run.dir=killed", f"optimization.max_update={MAX_UPDATE}",
                 "checkpoint.save_interval_updates=1"]
    log = demo_data / "killed_first.log"
    launcher = start(demo_data, overrides, log)
    wait_for_update(launcher, log, 3)
    ranks = spawned_ranks(launcher.pid)
    assert len(ranks) == 2, ranks
    os.kill(launcher.pid, signal.SIGKILL)  # the launcher alone, as an OOM killer or kill -9 would
    launcher.wait()
    launcher.log_handle.close()
    deadline = time.monotonic() + 60
    while any(running(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in ranks if running(pid)], "ranks outlived their launcher"
    # ... and died with it, rather than training on to the end as orphans (3 updates, about a second)
    first = log.read_text()
    assert "done training" not in first, first[-3000:]
    assert max(int(u) for u in re.findall(r"train_inner.*num_updates=(\d+),", first)) < MAX_UPDATE

    second = run(hydra_train_command("pretrain", "demo_stage1", overrides), cwd=demo_data)
    text = second.stdout + second.stderr
    assert second.returncode == 0, text[-5000:]
    assert "this launch owns the run folder" in text and "in use by another launch" not in text
    resumed = int(re.search(r"Loaded checkpoint \S+ \(epoch \d+ @ (\d+) updates\)", text).group(1))
    assert 2 <= resumed <= 3
    assert [int(u) for u in re.findall(r"train_inner.*num_updates=(\d+),", text)] == list(range(resumed + 1, MAX_UPDATE + 1))
    assert updates_in(demo_data / "killed" / "checkpoints" / "checkpoint_last.pt") == MAX_UPDATE
