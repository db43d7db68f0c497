"""sslam-submit (sslam_plugin.cli.submit_slurm): the sbatch script it writes, and saving before a requeue."""

import os
import pickle
import re
import stat
import sys
import threading
import time

import pytest
import torch

from conftest import REPO, run

pytest.importorskip("submitit")
pytest.importorskip("fairseq")

from sslam_plugin.cli import submit_slurm as submit  # noqa: E402  (after the skips: it needs submitit)
from sslam_plugin.training.watchdog import WATCHDOG_EXIT_STATUS  # noqa: E402


def fake_sbatch(folder):
    """An ``sbatch`` on PATH that keeps the submitted script and answers like SLURM (and an ``srun``)."""
    folder.mkdir()
    tools = {"sbatch": f'cp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"', "srun": "exit 1"}
    for name, body in tools.items():
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return dict(os.environ, PATH=f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_sbatch_script_carries_run_config_and_passthrough_settings(tmp_path):
    env = fake_sbatch(tmp_path / "bin")
    result = run(
        [
            sys.executable, str(REPO / "scripts" / "submit_slurm.py"),
            "--config-dir", str(REPO / "config" / "pretrain"), "--config-name", "eat_stage1",
            "--job-dir", str(tmp_path / "job"), "--cluster", "slurm",
            "--run-config", str(REPO / "config" / "run_config" / "slurm_2x8.yaml"),
            "--partition", "gpu", "--account", "proj42", "--qos", "high", "--constraint", "a100",
            "--mem-gb", "300", "--slurm", "mail-type=END", "--slurm", "reservation=paper",
            "--", "task.data=/data/manifests",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted job 4242 (slurm)" in result.stderr
    script = (tmp_path / "bin" / "submitted.sh").read_text()
    for line in (
        "#SBATCH --account=proj42", "#SBATCH --qos=high", "#SBATCH --constraint=a100", "#SBATCH --partition=gpu",
        "#SBATCH --exclusive", "#SBATCH --mem=300GB", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=80", "#SBATCH --time=4320",
        "#SBATCH --signal=USR2@120", "#SBATCH --requeue", "#SBATCH --mail-type=END", "#SBATCH --reservation=paper",
    ):
        assert line in script.splitlines(), (line, script)
    pickled = next((tmp_path / "job" / "submitit").glob("*_submitted.pkl"))
    command = pickle.loads(pickled.read_bytes()).function.command
    assert "distributed_training.distributed_world_size=16" in command
    assert f"hydra.run.dir={tmp_path / 'job' / 'run'}" in command and command[-1] == "task.data=/data/manifests"


def test_unknown_run_config_keys_and_bad_passthrough_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: 1\ngpus: 4\n")
    args = ["--config-dir", "c", "--config-name", "n", "--job-dir", str(tmp_path), "--cluster", "debug"]
    with pytest.raises(SystemExit):
        submit.main([*args, "--run-config", str(bad)])
    with pytest.raises(SystemExit):
        submit.main([*args, "--slurm", "no-value"])


def test_the_requeue_waits_for_a_checkpoint_and_the_requeued_job_resumes(demo_data, monkeypatch):
    """What submitit does on SLURM's time-limit signal: TrainJob.checkpoint(), then the job runs again."""
    monkeypatch.setattr(submit, "REQUEUE_WAIT_S", 0)
    job_dir = demo_data / "submitted"
    command = submit.build_command(
        str(REPO / "config" / "pretrain"), "demo_stage1", job_dir, 1,
        [f"task.data={demo_data / 'data' / 'manifests'}", "optimization.max_update=8", "dataset.batch_size=4",
         "task.target_length=128", "common.log_interval=1", "checkpoint.save_interval_updates=0"],
    )
    job = submit.TrainJob(command, cwd=str(demo_data))
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("error", _call(job)))
    thread.start()
    log = job_dir / "run" / "hydra_train.log"
    deadline = time.monotonic() + 300
    while not (log.exists() and re.search(r"num_updates=2,", log.read_text())):
        assert time.monotonic() < deadline and thread.is_alive(), log.read_text() if log.exists() else "no log"
        time.sleep(0.05)
    requeued = job.checkpoint()  # sends the stop signal and waits for the checkpoint
    stopped = torch.load(job_dir / "run" / "checkpoints" / "checkpoint_last.pt", weights_only=False)
    stopped = stopped["optimizer_history"][-1]["num_updates"]
    assert 2 <= stopped < 8 and "stopping at update" in log.read_text()
    thread.join(timeout=5)

    assert requeued.function.command == command
    requeued.result()  # the requeued job
    text = log.read_text()
    assert f"resuming from {job_dir / 'run' / 'checkpoints' / 'checkpoint_last.pt'} (update {stopped}" in text
    assert re.search(r"num_updates=8,", text)


def _call(job):
    try:
        job()
    except RuntimeError as err:  # the stopped run exits with the resumable status
        return err
    return None


@pytest.mark.parametrize("restarts, requeued", [("0", True), ("2", True), (str(submit.MAX_STALL_REQUEUES), False)])
def test_a_stalled_job_is_requeued_a_limited_number_of_times(tmp_path, monkeypatch, restarts, requeued):
    """Exit status 76 (the watchdog: a rank stalled) asks SLURM for a requeue, but a stall that repeats ends the job."""
    tools = tmp_path / "bin"
    tools.mkdir()
    scontrol = tools / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", restarts)
    monkeypatch.setattr(submit, "REQUEUE_WAIT_S", 0)  # SLURM would end the job during this wait
    job = submit.TrainJob([sys.executable, "-c", f"raise SystemExit({WATCHDOG_EXIT_STATUS})"], str(tmp_path))
    with pytest.raises(RuntimeError, match="exited with 76"):
        job()
    log = tmp_path / "scontrol.log"
    assert (log.read_text() if log.exists() else "") == ("requeue 4242\n" if requeued else "")


BIN = os.path.dirname(sys.executable)


def test_without_slurm_it_refuses_instead_of_training_here(tmp_path):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin")  # no sbatch
    result = run(
        [os.path.join(BIN, "sslam-submit"), "--config-dir", str(REPO / "config" / "pretrain"),
         "--config-name", "demo_stage1", "--job-dir", str(tmp_path / "job")],
        cwd=tmp_path, env=env,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: SLURM is not available here (no sbatch on PATH); run this on a SLURM login node, or pass "
        "--cluster local to train on this machine"
    ]
    assert not (tmp_path / "job").exists()  # nothing started


def test_a_failed_local_job_is_reported_by_its_error_line_and_log(tmp_path):
    result = run(
        [os.path.join(BIN, "sslam-submit"), "--config-dir", str(REPO / "config" / "pretrain"),
         "--config-name", "demo_stage1", "--job-dir", str(tmp_path / "job"), "--cluster", "local", "--wait",
         "--", f"task.data={tmp_path / 'no_such_folder'}"],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"error: job (\S+) failed: (.*) \(log: (\S+)\)", last)
    assert match, result.stderr
    assert "no_such_folder" in match.group(2)  # the training's own message, not submitit's traceback
    assert os.path.isfile(match.group(3)) and "no_such_folder" in open(match.group(3)).read()
    assert "job.stderr(0)" not in result.stderr and "Traceback" not in result.stderr


def test_last_error_line_skips_submitits_own_traceback():
    log = (
        "INFO starting\nTraceback (most recent call last):\n  File x\nValueError: task.data is missing\n"
        "submitit ERROR (2026) - Submitted job triggered an exception\nTraceback:\nRuntimeError: exited with 1\n"
    )
    assert submit.last_error_line(log) == "ValueError: task.data is missing"
    hydra = "AssertionError: Must specify batch size\n\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    assert submit.last_error_line(hydra) == "AssertionError: Must specify batch size"
    assert submit.last_error_line("just a line\n") == "just a line"
    assert submit.last_error_line("") is None
