import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import REPO, run

pytest.importorskip("submitit")
pytest.importorskip("fairseq")

spec = importlib.util.spec_from_file_location("submit_slurm", REPO / "scripts" / "submit_slurm.py")
submit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(submit)


def test_command_sets_world_size_and_a_shared_port_for_several_nodes(tmp_path):
    args = argparse.Namespace(config_dir="config/pretrain", config_name="eat_stage1", job_dir=tmp_path / "job",
                              nodes=2, gpus_per_node=4)
    command = submit.build_command(args, ["task.data=/data"])
    assert Path(command[0]).name == "fairseq-hydra-train"
    assert f"hydra.run.dir={tmp_path / 'job' / 'run'}" in command
    assert "distributed_training.distributed_world_size=8" in command
    ports = [c for c in command if c.startswith("distributed_training.distributed_port=")]
    assert len(ports) == 1 and ports == [c for c in submit.build_command(args, []) if "port" in c]
    assert command[-1] == "task.data=/data"
    args.nodes, args.gpus_per_node = 1, 0
    assert "distributed_training.distributed_world_size=1" in submit.build_command(args, [])


def test_local_submission_trains(demo_data):
    job_dir = demo_data / "submitted"
    result = run(
        [
            sys.executable, str(REPO / "scripts" / "submit_slurm.py"),
            "--config-dir", str(REPO / "config" / "pretrain"), "--config-name", "demo_stage1",
            "--job-dir", str(job_dir), "--cluster", "local", "--gpus-per-node", "0", "--time-min", "10", "--wait",
            "--", f"task.data={demo_data / 'data' / 'manifests'}", "optimization.max_update=2",
            "dataset.batch_size=4", "task.target_length=128",
        ],
        cwd=demo_data,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "submitted job" in result.stdout and "finished" in result.stdout
    assert (job_dir / "run" / "checkpoints" / "checkpoint_last.pt").is_file()
