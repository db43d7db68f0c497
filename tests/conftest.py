"""Shared fixtures: the reference material beside the clone, and small model configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("SSLAM_REFERENCE", REPO.parent / "shared" / "reference"))
GOLDEN = REFERENCE / "golden"
GOLDEN_STAGE2 = REFERENCE / "golden_stage2"


def require_reference(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference material not found at {path} (set SSLAM_REFERENCE to the shared/reference folder)")
    return path


@pytest.fixture
def golden_dir() -> Path:
    return require_reference(GOLDEN)


@pytest.fixture
def golden_stage2_dir() -> Path:
    return require_reference(GOLDEN_STAGE2)


def tiny_config(**overrides):
    """A small pre-training config (2 blocks, width 32) for fast CPU tests."""
    from sslam_plugin.models import DecoderConfig, EncoderConfig, PretrainingConfig

    enc = dict(embed_dim=32, depth=2, num_heads=2)
    enc.update(overrides.pop("encoder", {}))
    dec = dict(dim=32, layers=2, groups=4)
    dec.update(overrides.pop("decoder", {}))
    cfg = dict(clone_batch=2, average_top_k_layers=2)
    cfg.update(overrides)
    return PretrainingConfig(encoder=EncoderConfig(**enc), decoder=DecoderConfig(**dec), **cfg)


def golden_config():
    """The architecture of golden/official_eat_tiny_checkpoint.pt."""
    from sslam_plugin.models import DecoderConfig, EncoderConfig, PretrainingConfig

    return PretrainingConfig(
        encoder=EncoderConfig(embed_dim=192, depth=2, num_heads=3),
        decoder=DecoderConfig(dim=192, layers=2),
        clone_batch=2,
        average_top_k_layers=2,
    )


def venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(cmd, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def hydra_train_command(config_dir: str, config_name: str, overrides) -> list:
    """``fairseq-hydra-train --config-dir config/CONFIG_DIR --config-name CONFIG_NAME OVERRIDES``."""
    return [
        venv_bin("fairseq-hydra-train"),
        "--config-dir", str(REPO / "config" / config_dir),
        "--config-name", config_name,
        *overrides,
    ]


def hydra_train(config_dir: str, config_name: str, overrides, cwd, env=None) -> subprocess.CompletedProcess:
    """Run ``fairseq-hydra-train`` in ``cwd`` to the end (see :func:`hydra_train_command`)."""
    return run(hydra_train_command(config_dir, config_name, overrides), cwd=cwd, env=env)


def logged(log: str, key: str) -> dict:
    """{num_updates: value} of a key in the per-update ``train_inner`` lines of a training log."""
    import re

    values = {}
    for line in log.splitlines():
        if "train_inner" in line:
            update = int(re.search(r"num_updates=(\d+)", line).group(1))
            values[update] = float(re.search(rf"{key}=([-\d.e]+)", line).group(1))
    return values


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A small copy of the demo corpus (scale 0.1: 48 training clips) under ``ROOT/data``."""
    root = tmp_path_factory.mktemp("demo")
    result = run([sys.executable, str(REPO / "scripts" / "make_demo_data.py"), str(root / "data"), "--scale", "0.1"])
    assert result.returncode == 0, result.stderr
    return root
