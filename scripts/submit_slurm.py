#!/usr/bin/env python3
"""Submit a fairseq-hydra-train run to SLURM with submitit (requeued on timeout or preemption).

    python scripts/submit_slurm.py --config-dir config/pretrain --config-name eat_stage1 \
        --job-dir /abs/runs/eat_stage1 --nodes 1 --gpus-per-node 4 --partition gpu --time-min 4320 \
        -- task.data=/abs/path/to/manifests

Everything after ``--`` is passed to fairseq-hydra-train as overrides. The run
directory is JOB_DIR/run (checkpoints in JOB_DIR/run/checkpoints), submitit's
logs are in JOB_DIR/submitit. The world size is nodes x GPUs per node; fairseq
reads the node list and ranks from SLURM's environment. When SLURM stops the
job (time limit, preemption), submitit requeues it with the same command and
fairseq resumes from checkpoint_last.pt.

``--cluster local`` runs the same job as a local subprocess (no SLURM), and
``--cluster debug`` in this process: both are for trying a command first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import List, Optional, Sequence

import submitit


class TrainJob(submitit.helpers.Checkpointable):
    """Runs a fairseq-hydra-train command; on a SLURM stop, asks to be requeued as it is.

    Requeuing is resuming: the command's run directory holds checkpoint_last.pt.
    """

    def __init__(self, command: List[str], cwd: str):
        self.command = command
        self.cwd = cwd

    def __call__(self) -> int:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        completed = subprocess.run(self.command, cwd=self.cwd, env=env)
        if completed.returncode != 0:
            raise RuntimeError(f"fairseq-hydra-train exited with {completed.returncode}: {' '.join(self.command)}")
        return completed.returncode


def build_command(args: argparse.Namespace, overrides: Sequence[str]) -> List[str]:
    train = str(Path(sys.executable).parent / "fairseq-hydra-train")
    world = max(args.nodes * args.gpus_per_node, 1)
    port = 10000 + zlib.crc32(str(args.job_dir).encode()) % 20000  # the same on every node of a job
    command = [
        train,
        "--config-dir", str(Path(args.config_dir).resolve()),
        "--config-name", args.config_name,
        f"hydra.run.dir={Path(args.job_dir).resolve() / 'run'}",
        f"distributed_training.distributed_world_size={world}",
    ]
    if args.nodes > 1:
        command.append(f"distributed_training.distributed_port={port}")
    return command + list(overrides)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: List[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, overrides = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--config-name", required=True)
    parser.add_argument("--job-dir", type=Path, required=True, help="run and log folder (absolute)")
    parser.add_argument("--cluster", choices=["slurm", "local", "debug"], default=None, help="default: slurm if available")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument("--cpus-per-task", type=int, default=10)
    parser.add_argument("--mem-gb", type=int, default=None)
    parser.add_argument("--partition", default=None)
    parser.add_argument("--time-min", type=int, default=60 * 72)
    parser.add_argument("--name", default=None, help="job name (default: the config name)")
    parser.add_argument("--wait", action="store_true", help="wait for the job and report its end")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.gpus_per_node < 0:
        parser.error("--nodes must be >= 1 and --gpus-per-node >= 0")

    args.job_dir = args.job_dir.resolve()
    executor = submitit.AutoExecutor(folder=args.job_dir / "submitit", cluster=args.cluster)
    params = dict(
        name=args.name or args.config_name,
        timeout_min=args.time_min,
        nodes=args.nodes,
        tasks_per_node=1,  # fairseq starts one process per GPU itself
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
    )
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.partition:
        params["slurm_partition"] = args.partition
    executor.update_parameters(**params)
    command = build_command(args, overrides)
    job = executor.submit(TrainJob(command, cwd=os.getcwd()))
    print(f"submitted job {job.job_id} ({executor.cluster}): {' '.join(command)}")
    print(f"logs: {args.job_dir / 'submitit'}  run: {args.job_dir / 'run'}")
    if args.wait:
        job.result()
        print(f"job {job.job_id} finished")


if __name__ == "__main__":
    main()
