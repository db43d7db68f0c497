"""Process start-up, effective batch and stop signals (the launcher's logic without training)."""

from __future__ import annotations

import os
import re
import signal
import tempfile
from types import SimpleNamespace

import pytest

pytest.importorskip("fairseq")

from omegaconf import OmegaConf  # noqa: E402

from sslam_plugin.training import preemption  # noqa: E402
from sslam_plugin.training.launch_options import keep_effective_batch, share_cpu_threads  # noqa: E402
from sslam_plugin.training.topology import first_slurm_host, infer_topology  # noqa: E402


def slurm(**values) -> dict:
    env = {"SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "gpu[07-08]"}
    env.update({f"SLURM_{k.upper()}": str(v) for k, v in values.items()})
    return env


# ------------------------------------------------------------------ topology
def test_local_cpu_processes_meet_over_gloo():
    t = infer_topology(2, cpu=True, backend="nccl", port=-1, environ={}, device_count=0)
    assert (t.world_size, t.first_rank, t.local_processes, t.spawn, t.backend) == (2, 0, 2, True, "gloo")
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", t.init_method)


def test_one_process_needs_no_process_group():
    t = infer_topology(1, cpu=True, backend="nccl", port=-1, environ={}, device_count=0)
    assert (t.world_size, t.spawn, t.init_method) == (1, False, None)


def test_gpus_get_one_nccl_process_each_and_no_more_than_visible():
    t = infer_topology(4, cpu=False, backend="nccl", port=12345, environ={}, device_count=4)
    assert (t.world_size, t.local_processes, t.backend, t.init_method) == (4, 4, "nccl", "tcp://127.0.0.1:12345")
    with pytest.raises(ValueError, match="distributed_world_size=8 but 4 GPUs are visible"):
        infer_topology(8, cpu=False, backend="nccl", port=-1, environ={}, device_count=4)


def test_torchrun_variables_give_rank_world_and_device():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    t = infer_topology(1, cpu=False, backend="nccl", port=-1, environ=env, device_count=4)
    assert (t.world_size, t.first_rank + t.local_index, t.local_index, t.spawn, t.init_method) == (8, 5, 1, False, "env://")


@pytest.mark.parametrize("node", [0, 1])
def test_slurm_one_task_per_node_starts_one_process_per_gpu(node):
    env = slurm(nnodes=2, ntasks=2, ntasks_per_node=1, nodeid=node, procid=node)
    t = infer_topology(1, cpu=False, backend="nccl", port=-1, environ=env, device_count=4)
    assert (t.world_size, t.first_rank, t.local_processes, t.spawn) == (8, 4 * node, 4, True)
    assert t.init_method == f"tcp://gpu07:{10000 + 777}"  # the first node; the same port on every node


def test_slurm_one_task_per_node_on_cpu_splits_the_world_size():
    env = slurm(nnodes=2, ntasks=2, ntasks_per_node=1, nodeid=1, procid=1)
    t = infer_topology(4, cpu=True, backend="nccl", port=2000, environ=env, device_count=0)
    assert (t.world_size, t.first_rank, t.local_processes, t.backend, t.init_method) == (4, 2, 2, "gloo", "tcp://gpu07:2000")
    with pytest.raises(ValueError, match="distributed_world_size=3 cannot be split over 2 nodes"):
        infer_topology(3, cpu=True, backend="nccl", port=2000, environ=env, device_count=0)


def test_slurm_one_task_per_gpu_takes_its_rank_from_slurm():
    env = slurm(nnodes=2, ntasks=8, ntasks_per_node="4(x2)", nodeid=1, procid=6, localid=2)
    env["MASTER_ADDR"] = "10.1.2.3"
    t = infer_topology(1, cpu=False, backend="nccl", port=-1, environ=env, device_count=4)
    assert (t.world_size, t.first_rank + t.local_index, t.local_index, t.spawn) == (8, 6, 2, False)
    assert t.init_method == "tcp://10.1.2.3:10777"


def test_a_single_task_slurm_job_is_a_local_run():
    env = slurm(nnodes=1, ntasks=1, nodeid=0, procid=0)
    t = infer_topology(2, cpu=True, backend="nccl", port=-1, environ=env, device_count=0)
    assert t.init_method.startswith("tcp://127.0.0.1:") and t.local_processes == 2


@pytest.mark.parametrize(
    "nodelist, first", [("gpu[03-05,07],cpu1", "gpu03"), ("node1,node2", "node1"), ("localhost", "localhost")]
)
def test_first_host_of_a_slurm_node_list(nodelist, first, monkeypatch):
    monkeypatch.setenv("PATH", tempfile.gettempdir())  # no scontrol: the list is parsed
    assert first_slurm_host(nodelist) == first


# ----------------------------------------------------------- effective batch
def config(effective, batch=12, update_freq=(1,)):
    return OmegaConf.create(
        {
            "task": {"effective_batch_size": effective},
            "dataset": {"batch_size": batch},
            "optimization": {"update_freq": list(update_freq)},
        }
    )


@pytest.mark.parametrize("processes, update_freq", [(1, 4), (2, 2), (4, 1)])
def test_update_freq_keeps_48_clips_per_update(processes, update_freq):
    cfg = config(48)
    assert keep_effective_batch(cfg, processes) == 48
    assert list(cfg.optimization.update_freq) == [update_freq]
    assert cfg.dataset.batch_size * processes * update_freq == 48


def test_more_processes_than_the_batch_needs_lower_the_batch_size():
    cfg = config(48)
    keep_effective_batch(cfg, 8)
    assert (cfg.dataset.batch_size, list(cfg.optimization.update_freq)) == (6, [1])


def test_impossible_split_and_conflicting_update_freq_name_the_keys():
    with pytest.raises(ValueError, match="task.effective_batch_size=48 clips per update cannot be split into 5"):
        keep_effective_batch(config(48), 5)
    with pytest.raises(ValueError, match=r"optimization.update_freq=\[3\] and task.effective_batch_size=48"):
        keep_effective_batch(config(48, update_freq=(3,)), 1)


def test_without_an_effective_batch_update_freq_is_kept():
    cfg = config(None, batch=4, update_freq=(3,))
    assert keep_effective_batch(cfg, 2) == 24
    assert list(cfg.optimization.update_freq) == [3]


# -------------------------------------------------------------- stop signals
@pytest.fixture
def stop_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (*preemption.STOP_SIGNALS, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    preemption._requested = None
    preemption._first_interrupt = None
    preemption._training = False
    preemption._interrupted_again = False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_a_stop_signal_is_recorded_instead_of_killing(sig, stop_handlers):
    preemption.stop_on_signals()
    assert not preemption.stop_requested(SimpleNamespace(data_parallel_world_size=1))
    os.kill(os.getpid(), sig)
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal keeps the first name
    assert preemption.requested_signal() == sig.name
    assert preemption.stop_requested(SimpleNamespace(data_parallel_world_size=1))


def test_ctrl_c_stops_after_the_update_and_a_second_one_at_once(stop_handlers, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(preemption.time, "monotonic", lambda: clock[0])
    preemption.stop_on_signals()
    assert signal.getsignal(signal.SIGINT) is preemption.record_interrupt
    preemption._training = True  # an update of this launch is done (validate_and_save ran)
    os.kill(os.getpid(), signal.SIGINT)  # the first press: recorded, training goes on to the update's end
    assert preemption.requested_signal() == "SIGINT"
    clock[0] += 0.1
    os.kill(os.getpid(), signal.SIGINT)  # the launcher's copy of the same press
    assert preemption.requested_signal() == "SIGINT"
    clock[0] += preemption.INTERRUPT_REPEAT_S
    with pytest.raises(KeyboardInterrupt):  # a second press: stop now
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored(stop_handlers):
    """A job started with nohup/& ignores SIGINT; the training does not take it back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    preemption.stop_on_signals()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_cpu_ranks_share_the_machines_threads(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    environ = {}
    assert share_cpu_threads(2, environ) == 4 and environ["OMP_NUM_THREADS"] == "4"
    environ = {}
    assert share_cpu_threads(16, environ) == 1 and environ["OMP_NUM_THREADS"] == "1"
    environ = {"OMP_NUM_THREADS": "3"}  # the user's choice, per process
    assert share_cpu_threads(2, environ) == 3 and environ["OMP_NUM_THREADS"] == "3"


def test_ctrl_c_before_the_first_update_stops_at_once(stop_handlers):
    """Nothing to save yet, and a checkpoint at update 1 would become the run's resume point."""
    preemption.stop_on_signals()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert preemption.requested_signal() is None


def test_the_launcher_leaves_every_ctrl_c_to_the_ranks(stop_handlers, monkeypatch):
    """No update in the launcher: it never raises on a Ctrl-C, and ends with its ranks' status."""
    clock = [100.0]
    monkeypatch.setattr(preemption.time, "monotonic", lambda: clock[0])
    preemption.record_launcher_interrupt(signal.SIGINT, None)
    assert preemption.requested_signal() == "SIGINT" and not preemption.interrupted_again()
    clock[0] += 0.1
    preemption.record_launcher_interrupt(signal.SIGINT, None)  # the terminal's copy of the same press
    assert not preemption.interrupted_again()
    clock[0] += 1.0
    preemption.record_launcher_interrupt(signal.SIGINT, None)  # a second press: noted, no KeyboardInterrupt
    assert preemption.interrupted_again() and preemption.requested_signal() == "SIGINT"
