"""The training system end to end through fairseq-hydra-train, on CPU processes (gloo).

One uninterrupted reference run per (stage, process count); every other run
is compared with them:

* 2 processes x 4 clips equal 1 process x 4 clips x update_freq 2 (both from
  ``task.effective_batch_size=8``): the same gradients after one update and
  the same losses after that, to float round-off.
* runs stopped by a preemption signal (SIGUSR2), by ``kill -9`` or with a
  damaged ``checkpoint_last.pt``, then launched again with the same command,
  log exactly the losses of the uninterrupted run.
* two "nodes" started from SLURM's variables equal the 2-process run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import torch

from conftest import hydra_train_command, logged

pytest.importorskip("fairseq")

COMMON = [
    "task.data=data/manifests",  # relative to the launch folder
    "dataset.batch_size=4",
    "task.effective_batch_size=8",
    "dataset.num_workers=0",
    "task.target_length=128",
    "common.log_interval=1",
    "checkpoint.save_interval_updates=1",
]
TWO_PROCESSES = ["common.cpu=true", "distributed_training.distributed_world_size=2"]
# Stage-1 runs on one process decode in DataLoader workers (one thread each: their features
# differ from the main process's two threads at float round-off, so runs compared bit for
# bit use the same setting).
WORKERS = ["dataset.num_workers=2"]
STAGE1_UPDATES = 10  # 6 updates per epoch: the runs cross an epoch boundary
STAGE2_UPDATES = 7
LOSS_KEYS = ("loss", "loss_patch", "loss_utterance")
STAGE2_KEYS = LOSS_KEYS + ("loss_patch_mixed", "loss_utterance_mixed", "loss_source_retention")


def start(cwd: Path, config: str, overrides: List[str], log: Path, env: Optional[Dict[str, str]] = None):
    """fairseq-hydra-train in its own process group (as a SLURM step), output to ``log``."""
    handle = open(log, "w")
    process = subprocess.Popen(
        hydra_train_command("pretrain", config, overrides),
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
        start_new_session=True,
    )
    process.log_handle = handle
    return process


def finish(process, log: Path, timeout: float = 600, status: int = 0) -> str:
    rc = process.wait(timeout=timeout)
    process.log_handle.close()
    text = log.read_text()
    assert rc == status, text[-5000:]
    return text


RESUMABLE = 75  # the exit status after a stop on a signal


def train(cwd: Path, config: str, overrides: List[str], name: str, env=None) -> str:
    log = cwd / f"{name}.log"
    return finish(start(cwd, config, overrides, log, env), log)


def wait_for_update(process, log: Path, update: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(rf"train_inner.*num_updates={update},", log.read_text()):
            return
        assert process.poll() is None, log.read_text()[-5000:]
        time.sleep(0.05)
    raise TimeoutError(f"update {update} not reached: {log.read_text()[-3000:]}")


def last_update(run_dir: Path) -> int:
    ckpt = torch.load(run_dir / "checkpoints" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    return ckpt["optimizer_history"][-1]["num_updates"]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def gradients_after_first_update(run_dir: Path) -> Dict[str, torch.Tensor]:
    """Adam's first moment after one step is (1 - beta1) * gradient: the gradients, exactly scaled."""
    state = load(run_dir / "checkpoints" / "checkpoint_1_1.pt")["last_optimizer_state"]
    return {
        f"{group}.{index}": moments["exp_avg"]
        for group, optim in state.items()
        for index, moments in optim["state"].items()
    }


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_same_run(resumed_log: str, reference_log: str, keys, from_update: int, to_update: int) -> None:
    """Every logged value of the resumed launch equals the uninterrupted run's (as logged)."""
    for key in keys:
        resumed, reference = logged(resumed_log, key), logged(reference_log, key)
        assert sorted(resumed) == list(range(from_update, to_update + 1)), (key, sorted(resumed))
        assert resumed == {u: reference[u] for u in resumed}, key


def assert_weights_equal(a: Path, b: Path) -> None:
    model_a, model_b = load(a)["model"], load(b)["model"]
    assert model_a.keys() == model_b.keys()
    for key, value in model_a.items():
        if key == "_ema":
            for name, tensor in value.items():
                assert torch.equal(tensor, model_b["_ema"][name]), name
        else:
            assert torch.equal(value, model_b[key]), key


# ------------------------------------------------------------------ references
@pytest.fixture(scope="module")
def stage1(demo_data) -> Dict[str, object]:
    """Uninterrupted stage-1 runs on 1 process (update_freq 2) and on 2 processes."""
    one = train(
        demo_data,
        "demo_stage1",
        [*COMMON, *WORKERS, "hydra.run.dir=s1_one", f"optimization.max_update={STAGE1_UPDATES}"],
        "s1_one",
    )
    two = train(
        demo_data,
        "demo_stage1",
        [*COMMON, *TWO_PROCESSES, "hydra.run.dir=s1_two", f"optimization.max_update={STAGE1_UPDATES}"],
        "s1_two",
    )
    return {"one": one, "two": two, "one_dir": demo_data / "s1_one", "two_dir": demo_data / "s1_two"}


@pytest.fixture(scope="module")
def stage2(demo_data, stage1) -> Dict[str, object]:
    """Uninterrupted stage-2 runs from the stage-1 checkpoint, on 1 and 2 processes."""
    start_from = f"checkpoint.continue_once={stage1['one_dir'] / 'checkpoints' / 'checkpoint_last.pt'}"
    common = [*COMMON, start_from, f"optimization.max_update={STAGE2_UPDATES}"]
    one = train(demo_data, "demo_stage2", [*common, "hydra.run.dir=s2_one"], "s2_one")
    two = train(demo_data, "demo_stage2", [*common, *TWO_PROCESSES, "hydra.run.dir=s2_two"], "s2_two")
    return {"one": one, "two": two, "one_dir": demo_data / "s2_one", "two_dir": demo_data / "s2_two", "common": common}


# ------------------------------------------------------------- data parallel
@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_two_processes_equal_one_with_accumulation(stage, request):
    runs = request.getfixturevalue(stage)
    assert "effective batch: 8 clips per update (4 per process x 1 processes x update_freq 2)" in runs["one"]
    assert "effective batch: 8 clips per update (4 per process x 2 processes x update_freq 1)" in runs["two"]
    assert "data parallel: 2 processes (gloo" in runs["two"]
    grads_one, grads_two = gradients_after_first_update(runs["one_dir"]), gradients_after_first_update(runs["two_dir"])
    assert grads_one.keys() == grads_two.keys() and len(grads_one) > 10
    for name, grad in grads_one.items():
        assert grad.abs().sum() > 0, name
        assert relative_error(grads_two[name], grad) < 1e-4, name
    keys = STAGE2_KEYS if stage == "stage2" else LOSS_KEYS
    for key in keys + ("pred_var", "target_var", "masked_pct"):
        one, two = logged(runs["one"], key), logged(runs["two"], key)
        assert one.keys() == two.keys() and len(one) > 1
        for update in one:
            assert two[update] == pytest.approx(one[update], rel=2e-3, abs=2e-4), (key, update)
    one_ckpt, two_ckpt = (load(runs[d] / "checkpoints" / "checkpoint_last.pt")["model"] for d in ("one_dir", "two_dir"))
    for key in ("blocks.0.attn.qkv.weight", "modality_encoders.IMAGE.decoder.proj.weight"):
        assert torch.allclose(one_ckpt[key], two_ckpt[key], atol=1e-4), key


# ------------------------------------------------------------ exact resuming
def test_preempted_two_process_stage1_resumes_exactly(demo_data, stage1):
    """SIGUSR2 to the launcher (as SLURM/submitit send before a time limit); the same command again resumes.

    Launched without hydra.run.dir: the run folder is runs/demo_stage1 under the launch folder.
    """
    cwd = demo_data / "typed_twice"
    cwd.mkdir()
    os.symlink(demo_data / "data", cwd / "data")
    overrides = [*COMMON, *TWO_PROCESSES, f"optimization.max_update={STAGE1_UPDATES}"]
    log = cwd / "first.log"
    process = start(cwd, "demo_stage1", overrides, log)
    wait_for_update(process, log, 3)
    process.send_signal(signal.SIGUSR2)  # the launcher passes it on to both ranks
    first = finish(process, log, status=RESUMABLE)
    stopped = last_update(cwd / "runs" / "demo_stage1")
    assert 3 <= stopped < STAGE1_UPDATES
    assert f"stopping at update {stopped} on SIGUSR2: saving a checkpoint" in first
    assert "Stopping training due to num_updates" not in first

    second = train(cwd, "demo_stage1", overrides, "second")  # the same command, typed again
    assert f"resuming from {cwd / 'runs' / 'demo_stage1' / 'checkpoints' / 'checkpoint_last.pt'} (update {stopped}" in second
    assert_same_run(second, stage1["two"], LOSS_KEYS + ("ema_decay",), stopped + 1, STAGE1_UPDATES)
    assert_weights_equal(cwd / "runs" / "demo_stage1" / "checkpoints" / "checkpoint_last.pt",
                         stage1["two_dir"] / "checkpoints" / "checkpoint_last.pt")


def test_killed_one_process_stage1_with_workers_resumes_exactly(demo_data, stage1):
    """kill -9 of the whole process group (DataLoader workers included), then the same command again."""
    overrides = [*COMMON, *WORKERS, "hydra.run.dir=s1_killed", f"optimization.max_update={STAGE1_UPDATES}"]
    log = demo_data / "s1_killed_first.log"
    process = start(demo_data, "demo_stage1", overrides, log)
    wait_for_update(process, log, 3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.log_handle.close()
    second = train(demo_data, "demo_stage1", overrides, "s1_killed_second")
    # checkpoints are saved every update; a kill during fairseq's copy to checkpoint_last.pt leaves it
    # damaged, and the relaunch then starts from the newest intact one
    stopped = int(re.search(r"Loaded checkpoint \S+ \(epoch \d+ @ (\d+) updates\)", second).group(1))
    assert stopped >= 2
    assert_same_run(second, stage1["one"], LOSS_KEYS + ("ema_decay",), stopped + 1, STAGE1_UPDATES)
    assert_weights_equal(demo_data / "s1_killed" / "checkpoints" / "checkpoint_last.pt",
                         stage1["one_dir"] / "checkpoints" / "checkpoint_last.pt")


def test_ctrl_c_saves_stops_and_resumes_exactly(demo_data, stage1):
    """Ctrl-C in a terminal (SIGINT to the whole job, DataLoader workers included): the first press
    saves at the end of the update and stops; the workers keep serving until then."""
    overrides = [*COMMON, *WORKERS, "hydra.run.dir=s1_ctrl_c", f"optimization.max_update={STAGE1_UPDATES}"]
    log = demo_data / "s1_ctrl_c_first.log"
    process = start(demo_data, "demo_stage1", overrides, log)
    wait_for_update(process, log, 3)
    os.killpg(process.pid, signal.SIGINT)
    first = finish(process, log, status=RESUMABLE)
    assert "Ctrl-C: saving a checkpoint after the current update and stopping" in first
    assert "KeyboardInterrupt" not in first and "exited unexpectedly" not in first
    stopped = last_update(demo_data / "s1_ctrl_c")
    assert f"stopping at update {stopped} on SIGINT" in first
    second = train(demo_data, "demo_stage1", overrides, "s1_ctrl_c_second")
    assert_same_run(second, stage1["one"], LOSS_KEYS + ("ema_decay",), stopped + 1, STAGE1_UPDATES)
    assert_weights_equal(demo_data / "s1_ctrl_c" / "checkpoints" / "checkpoint_last.pt",
                         stage1["one_dir"] / "checkpoints" / "checkpoint_last.pt")


def test_ctrl_c_before_the_first_update_stops_at_once_without_a_checkpoint(demo_data):
    log = demo_data / "s1_early_ctrl_c.log"
    process = start(demo_data, "demo_stage1", [*COMMON, "hydra.run.dir=s1_early_ctrl_c"], log)
    deadline = time.monotonic() + 120
    while "training from scratch" not in log.read_text():  # the launch has begun, no update yet
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) != 0
    process.log_handle.close()
    assert "train_inner" not in log.read_text()
    assert not (demo_data / "s1_early_ctrl_c" / "checkpoints" / "checkpoint_last.pt").exists()


def test_ctrl_c_on_two_processes_with_workers(demo_data, stage1):
    """Spawned ranks fork their DataLoader workers (a spawned worker imports fairseq for seconds each
    epoch, and a Ctrl-C during that import killed it); one Ctrl-C stops both ranks at one update."""
    overrides = [*COMMON, *TWO_PROCESSES, "dataset.num_workers=1", "hydra.run.dir=s1_two_ctrl_c",
                 f"optimization.max_update={STAGE1_UPDATES}"]
    log = demo_data / "s1_two_ctrl_c_first.log"
    process = start(demo_data, "demo_stage1", overrides, log)
    wait_for_update(process, log, 5)  # past the first epoch's end (6 updates): new workers start
    os.killpg(process.pid, signal.SIGINT)
    first = finish(process, log, status=RESUMABLE)
    assert "KeyboardInterrupt" not in first and "exited unexpectedly" not in first
    stopped = last_update(demo_data / "s1_two_ctrl_c")
    second = train(demo_data, "demo_stage1", overrides, "s1_two_ctrl_c_second")
    for key in LOSS_KEYS:  # workers compute features on one thread: equal to round-off
        resumed, reference = logged(second, key), logged(stage1["two"], key)
        assert sorted(resumed) == list(range(stopped + 1, STAGE1_UPDATES + 1)), key
        for update, value in resumed.items():
            assert value == pytest.approx(reference[update], rel=1e-4, abs=1e-4), (key, update)


def test_a_two_process_run_requeued_on_one_process_continues_the_job(demo_data, stage1):
    """Preempted on 2 processes, resumed on 1 (update_freq 2 keeps the batch): the epoch goes on where
    the job was, not where one process was, and the run continues as the 1-process run does."""
    run_dir = demo_data / "s1_regrouped"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(stage1["two_dir"] / "checkpoints" / "checkpoint_1_3.pt", run_dir / "checkpoints" / "checkpoint_last.pt")
    log = train(demo_data, "demo_stage1",
                [*COMMON, *WORKERS, "hydra.run.dir=s1_regrouped", f"optimization.max_update={STAGE1_UPDATES}"],
                "s1_regrouped")
    assert "resuming epoch 1 on 1 processes instead of 2: batch 6 of the epoch, 6 per process" in log
    for key in LOSS_KEYS:
        resumed, reference = logged(log, key), logged(stage1["one"], key)
        assert sorted(resumed) == list(range(4, STAGE1_UPDATES + 1)), key
        for update, value in resumed.items():  # 2 processes equal 1 to float round-off (above)
            assert value == pytest.approx(reference[update], rel=2e-3, abs=2e-4), (key, update)


def test_damaged_last_checkpoint_falls_back_to_the_newest_intact_one(demo_data, stage1):
    run_dir = demo_data / "s1_damaged"
    shutil.copytree(stage1["one_dir"], run_dir)
    last = run_dir / "checkpoints" / "checkpoint_last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # killed while fairseq copied it
    (run_dir / "checkpoints" / f"checkpoint_2_{STAGE1_UPDATES}.pt").unlink()  # the newest intact one is older
    log = train(
        demo_data,
        "demo_stage1",
        [*COMMON, *WORKERS, "hydra.run.dir=s1_damaged", f"optimization.max_update={STAGE1_UPDATES}"],
        "s1_damaged",
    )
    fallback = run_dir / "checkpoints" / f"checkpoint_2_{STAGE1_UPDATES - 1}.pt"
    assert f"{last}: " in log and f"resuming from the newest intact checkpoint {fallback} instead" in log
    assert f"Loaded checkpoint {fallback} (epoch 2 @ {STAGE1_UPDATES - 1} updates)" in log
    # It trained one update (the last) from the fallback's weights, optimizer state and update count:
    # exactly the uninterrupted run's last update, so the same weights and Adam moments, bit for bit.
    assert_same_run(log, stage1["one"], LOSS_KEYS, STAGE1_UPDATES, STAGE1_UPDATES)
    reference = stage1["one_dir"] / "checkpoints" / "checkpoint_last.pt"
    assert last_update(run_dir) == STAGE1_UPDATES
    assert_weights_equal(last, reference)
    resumed, uninterrupted = (load(path)["last_optimizer_state"] for path in (last, reference))
    moments = [(group, index, name) for group, optim in uninterrupted.items() for index, state in optim["state"].items()
               for name in ("exp_avg", "exp_avg_sq")]
    assert len(moments) > 20
    for group, index, name in moments:
        assert torch.equal(resumed[group]["state"][index][name], uninterrupted[group]["state"][index][name])


def test_preempted_stage2_resumes_exactly_and_never_restarts_from_stage1(demo_data, stage2):
    """SIGTERM to every process of the step (SLURM's preemption); relaunch with the same continue_once."""
    for processes, reference in ((TWO_PROCESSES, "two"), ([], "one")):
        name = f"s2_preempted_{reference}"
        overrides = [*stage2["common"], *processes, f"hydra.run.dir={name}"]
        log = demo_data / f"{name}_first.log"
        process = start(demo_data, "demo_stage2", overrides, log)
        wait_for_update(process, log, 2)
        os.killpg(process.pid, signal.SIGTERM)
        first = finish(process, log, status=RESUMABLE)
        stopped = last_update(demo_data / name)
        assert 2 <= stopped < STAGE2_UPDATES and "starting from the weights of" in first
        second = train(demo_data, "demo_stage2", overrides, f"{name}_second")
        assert "starting from the weights of" not in second
        assert f"resuming from {demo_data / name / 'checkpoints' / 'checkpoint_last.pt'}" in second
        assert_same_run(second, stage2[reference], STAGE2_KEYS + ("ema_decay",), stopped + 1, STAGE2_UPDATES)
        assert_weights_equal(demo_data / name / "checkpoints" / "checkpoint_last.pt",
                             stage2[f"{reference}_dir"] / "checkpoints" / "checkpoint_last.pt")


# ---------------------------------------------------------------------- SLURM
def test_two_slurm_nodes_equal_two_local_processes(demo_data, stage1):
    """Two launchers with SLURM's variables (one task per node, one CPU process each) form one run."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_SIZE"))}
    # Both "nodes" share this machine, so each gets the thread share of one of the two local
    # ranks it is compared with (CPU sums differ in the last digit between thread counts).
    base["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // 2))
    updates = 3
    processes = []
    for node in (0, 1):
        env = dict(base, SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="localhost", SLURM_NNODES="2",
                   SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_NODEID=str(node), SLURM_PROCID=str(node))
        overrides = [*COMMON, *TWO_PROCESSES, f"hydra.run.dir=slurm_node{node}",
                     f"optimization.max_update={updates}", f"distributed_training.distributed_port={port}"]
        log = demo_data / f"slurm_node{node}.log"
        processes.append((start(demo_data, "demo_stage1", overrides, log, env), log))
    logs = [finish(process, log) for process, log in processes]
    assert f"data parallel: 2 processes (gloo, tcp://localhost:{port}), ranks 0-0 here" in logs[0]
    assert f"data parallel: 2 processes (gloo, tcp://localhost:{port}), ranks 1-1 here" in logs[1]
    for key in LOSS_KEYS:
        assert logged(logs[0], key) == {u: v for u, v in logged(stage1["two"], key).items() if u <= updates}, key


def test_torchrun_processes_equal_two_local_processes(demo_data, stage1):
    """torchrun starts both ranks itself (RANK, WORLD_SIZE, MASTER_ADDR/PORT, LOCAL_RANK)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    updates = 3
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "RANK", "WORLD_SIZE"))}
    # torchrun gives each rank one OpenMP thread unless told otherwise; the local
    # ranks it is compared with get half the machine's each. CPU sums differ in the
    # last digit between thread counts, so both get the same.
    env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // 2))
    command = [
        str(Path(hydra_train_command("pretrain", "demo_stage1", [])[0]).parent / "torchrun"),
        "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
        *hydra_train_command("pretrain", "demo_stage1", [
            *COMMON, "common.cpu=true", "hydra.run.dir=torchrun", f"optimization.max_update={updates}"
        ]),
    ]
    result = subprocess.run(command, cwd=demo_data, env=dict(env, PYTHONUNBUFFERED="1"), capture_output=True, text=True,
                            timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "data parallel: 2 processes (gloo, env://), ranks 1-1 here" in log
    for key in LOSS_KEYS:
        assert logged(log, key) == {u: v for u, v in logged(stage1["two"], key).items() if u <= updates}, key
