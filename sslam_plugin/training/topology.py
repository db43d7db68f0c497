"""Where a job's processes come from and how they meet: one, N local ones, torchrun's, or SLURM's.

* ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): one
  process per rank, already started.
* SLURM with several tasks or nodes: one task per device (``SLURM_PROCID``,
  ``SLURM_LOCALID``), or one task per node that starts one process per device
  (the GPUs it sees; on CPU ``distributed_world_size / nodes``). The master is
  ``MASTER_ADDR`` or the job's first node; the port ``distributed_port``, or one
  derived from the job id, the same on every node.
* otherwise this machine: ``distributed_world_size`` processes (default: the
  visible GPUs; on CPU with ``common.cpu=true``, as many as asked).

CPU processes talk over gloo, GPUs over NCCL.
"""

from __future__ import annotations

import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import torch

__all__ = ["Topology", "infer_topology", "first_slurm_host", "owns_the_run", "use_cpu"]


@dataclass
class Topology:
    world_size: int
    first_rank: int  # rank of this launcher's first process
    local_processes: int  # processes this launcher runs (spawned when spawn)
    spawn: bool  # start local_processes new processes, or run one in this process
    local_index: int  # without spawn: this process's device index on its node
    init_method: Optional[str]
    backend: str


def use_cpu(cfg: Any) -> bool:
    return bool(cfg.common.cpu) or not torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``scontrol`` when present, else parsed)."""
    try:
        out = subprocess.check_output(["scontrol", "show", "hostnames", nodelist], text=True)
        return out.split()[0]
    except (FileNotFoundError, subprocess.CalledProcessError, IndexError):
        pass
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)  # "gpu[03-05,07],cpu1" -> "gpu03"
    if match is None:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR to the first node")
    prefix, _, ranges = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def _started_by_torchrun(environ: Mapping[str, str]) -> bool:
    return all(k in environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _slurm_tasks(environ: Mapping[str, str]) -> Optional[Tuple[int, int, str]]:
    """(nodes, tasks, node list) of a SLURM step with several tasks or nodes; None otherwise."""
    nodes = int(environ.get("SLURM_NNODES", environ.get("SLURM_JOB_NUM_NODES", "1")))
    tasks = int(environ.get("SLURM_NTASKS", "1"))
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    return (nodes, tasks, nodelist) if nodelist and (nodes > 1 or tasks > 1) else None


def infer_topology(
    world_size: int,
    cpu: bool,
    backend: str,
    port: int,
    environ: Mapping[str, str],
    device_count: int,
) -> Topology:
    """How many processes to run, their ranks and how they meet.

    Args:
        world_size: ``distributed_training.distributed_world_size`` (used on
            one machine, and per node on CPU under SLURM).
        cpu: CPU processes (gloo) instead of one per GPU.
        backend: ``distributed_backend`` for GPUs (gloo is used on CPU).
        port: ``distributed_port`` (<= 0: pick one).
        environ: the process environment (torchrun's and SLURM's variables).
        device_count: visible GPUs.
    """
    backend = "gloo" if cpu else backend
    if _started_by_torchrun(environ):
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", 0))
        return Topology(world, rank - local, 1, False, local, "env://", backend)

    slurm = _slurm_tasks(environ)
    if slurm is not None:
        nodes, tasks, nodelist = slurm
        tasks_per_node = int(environ.get("SLURM_NTASKS_PER_NODE", "0").split("(")[0]) or tasks // nodes
        master = environ.get("MASTER_ADDR") or first_slurm_host(nodelist)
        if port <= 0:  # the same on every node: derived from the job
            port = 10000 + int(environ.get("SLURM_JOB_ID", "0")) % 50000
        init = f"tcp://{master}:{port}"
        if tasks_per_node == 1:  # one task per node: it starts one process per device
            per_node = world_size // nodes if cpu else device_count
            if per_node < 1 or (cpu and world_size % nodes):
                raise ValueError(
                    f"distributed_training.distributed_world_size={world_size} cannot be split over {nodes} nodes"
                    + ("" if cpu else f" with {device_count} GPUs each")
                )
            node = int(environ.get("SLURM_NODEID", "0"))
            return Topology(nodes * per_node, node * per_node, per_node, True, 0, init, backend)
        rank, local = int(environ["SLURM_PROCID"]), int(environ.get("SLURM_LOCALID", "0"))
        return Topology(tasks, rank - local, 1, False, local, init, backend)

    if world_size <= 1:
        return Topology(1, 0, 1, False, 0, None, backend)
    if not cpu and world_size > device_count:
        raise ValueError(
            f"distributed_training.distributed_world_size={world_size} but {device_count} GPUs are visible on this "
            "machine: use at most that many, several nodes (SLURM), or common.cpu=true for CPU processes"
        )
    port = port if port > 0 else _free_port()
    return Topology(world_size, 0, world_size, True, 0, f"tcp://127.0.0.1:{port}", backend)


def owns_the_run(environ: Mapping[str, str], distributed_rank: Optional[int] = 0) -> bool:
    """Whether this process starts global rank 0: the one process of a job that holds the run lock.

    The same cases as :func:`infer_topology`: torchrun's ``RANK``; SLURM's
    ``SLURM_PROCID`` with several tasks (task 0 is node 0's launcher or rank
    0); otherwise this machine's launcher. ``distributed_rank`` counts where
    the user chose how processes meet (``distributed_init_method``).
    """
    if _started_by_torchrun(environ):
        return int(environ["RANK"]) == 0
    if _slurm_tasks(environ) is not None:
        return int(environ.get("SLURM_PROCID", "0")) == 0
    return int(distributed_rank or 0) == 0
