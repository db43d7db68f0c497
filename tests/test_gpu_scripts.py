"""The prepared one-call GPU check (benchmarks/gpu_speed_check.sh) runs end to end, here on the CPU.

A device is lent only for minutes, so the script must not fail on its own bugs there; this runs it
at tiny shapes through the same two parts (plain/fast, then the compiled step under a time limit).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_speed_check_script_runs_on_the_cpu(tmp_path):
    env = dict(
        os.environ, OUT=str(tmp_path), PYTHON=sys.executable, SIZE="tiny", BATCH="2", FRAMES="128",
        STEPS="1", COMPILE="1", COMPILE_TIMEOUT="600", OMP_NUM_THREADS="2",
    )
    run = subprocess.run(["bash", "benchmarks/gpu_speed_check.sh"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    first = json.loads((tmp_path / "gpu_speed_check.json").read_text())
    compiled = json.loads((tmp_path / "gpu_speed_check_compiled.json").read_text())
    modes = [(c["stage"], c["mode"]) for c in first["cases"] if "mode" in c]
    assert modes == [(1, "plain"), (1, "fast"), (2, "plain"), (2, "fast")]
    assert [(c["stage"], c["mode"]) for c in compiled["cases"] if "mode" in c] == [
        (1, "plain"), (1, "compiled"), (2, "plain"), (2, "compiled")]
    for case in first["cases"] + compiled["cases"]:
        assert "error" not in case, case
        if "compare" in case:  # fast and compiled steps give the plain step's first losses
            assert case["first_step_max_rel_diff"] < 1e-5, case
    assert len([c for c in compiled["cases"] if "compare" in c]) == 2
    assert (tmp_path / "profile").is_dir() and len(list((tmp_path / "profile").iterdir())) == 4
    assert "fast vs plain" in run.stdout and "compiled vs plain" in run.stdout
    if "golden_max_abs_diff" in first:  # ../shared/reference beside the checkout
        assert max(first["golden_max_abs_diff"].values()) < 1e-4


def test_gpu_checks_stop_at_once_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - the device machine
        return
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    run = subprocess.run(["bash", "benchmarks/gpu_checks.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2
    assert run.stderr.startswith("error: no CUDA device visible") and "CPU=1" in run.stderr
    assert not (tmp_path / "gpu_checks.tar.gz").exists()


def test_gpu_checks_fairseq_speedups_part_runs_on_the_cpu(tmp_path):
    """The speed replacements on and off from the same start: on the CPU the losses agree bit for bit."""
    import tarfile

    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, CHECKS="speedups", CPU="1", SIZE="tiny",
               BATCH="2", FRAMES="128", SPEEDUPS_UPDATES="3", SPEEDUPS_TIMEOUT="600", OMP_NUM_THREADS="2")
    run = subprocess.run(["bash", "benchmarks/gpu_checks.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "fairseq speed replacements check: exit status 0" in run.stdout, run.stdout[-3000:]
    with tarfile.open(tmp_path / "gpu_checks.tar.gz") as archive:
        result = json.load(archive.extractfile("./fairseq_speedups.json"))
    assert result["on"]["speedups"] is True and result["off"]["speedups"] is False
    assert len(result["on"]["losses"]) == len(result["off"]["losses"]) == 3
    assert result["on"]["losses"] == result["off"]["losses"] and result["loss_max_rel_diff"] == 0.0
    assert result["on"]["losses"][0] != result["on"]["losses"][-1]  # the updates changed the model
    assert result["within_tolerance"] and result["on"]["step_ms_median"] > 0
