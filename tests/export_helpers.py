"""Builders shared by the checkpoint, inference and script tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Dict, List

import numpy as np
import soundfile as sf
import torch

from conftest import REPO, tiny_config

# A meta-path finder that makes fairseq (and omegaconf, which comes with it) unimportable.
HIDE_FAIRSEQ = textwrap.dedent(
    """
    import sys, importlib.abc

    class HideFairseq(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("fairseq", "omegaconf", "hydra"):
                raise ImportError(name + " is hidden for this test")
            return None

    sys.meta_path.insert(0, HideFairseq())
    """
)


def script(name: str) -> ModuleType:
    """The command-line module ``sslam_plugin.cli.<name>`` (to call its ``main`` in-process)."""
    return importlib.import_module(f"sslam_plugin.cli.{name}")


def run_python(args: List[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run Python with this checkout (not an installed copy) first on the path."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_pretraining_checkpoint(
    target_length: int = 128, omegaconf_cfg: bool = False, stage2: bool = False, seed: int = 0
) -> Dict:
    """A checkpoint as this plugin's pre-training writes it, for a width-32 model.

    The teacher is perturbed so that student and teacher differ.
    """
    from sslam_plugin.checkpoints.official_names import pretrainer_to_official
    from sslam_plugin.models import BootstrapPretrainer

    torch.manual_seed(seed)
    cfg = tiny_config()
    model = pretrainer_to_official(BootstrapPretrainer(cfg).state_dict())
    model["_ema"] = {k: v + 0.01 * torch.randn_like(v) for k, v in model["_ema"].items()}
    if stage2:
        model["_mixing_generator_state"] = torch.zeros(5056, dtype=torch.uint8)
    encoder = {
        "embed_dim": cfg.encoder.embed_dim, "depth": cfg.encoder.depth, "num_heads": cfg.encoder.num_heads,
        "patch_size": 16, "num_mel_bins": 128, "max_time_patches": cfg.encoder.max_time_patches,
    }
    config = {
        "model": {"_name": "sslam_pretraining", "encoder": encoder, "clone_batch": 2},
        "task": {"_name": "sslam_pretraining", "target_length": target_length, "norm_mean": -5.0, "norm_std": 4.0},
    }
    if omegaconf_cfg:
        from omegaconf import OmegaConf

        config = OmegaConf.create(config)
    return {
        "args": None, "cfg": config, "model": model, "criterion": None,
        "optimizer_history": [{"num_updates": 7}], "task_state": {}, "extra_state": {}, "last_optimizer_state": None,
    }


def finetuned_checkpoint(
    official: Dict,
    num_classes: int = 6,
    fc_norm: bool = True,
    prediction_mode: str = "CLS_TOKEN",
    labels: bool = True,
    seed: int = 0,
) -> Dict:
    """The golden encoder in the fine-tuned layout with a random head (official cfg names)."""
    from sslam_plugin.checkpoints.official_names import is_official_encoder_name

    g = torch.Generator().manual_seed(seed)
    student = official["model"]
    model = {"model." + k: v.clone() for k, v in student.items() if k != "_ema" and is_official_encoder_name(k)}
    width = student["modality_encoders.IMAGE.extra_tokens"].shape[-1]
    model["head.weight"] = torch.randn(num_classes, width, generator=g)
    model["head.bias"] = torch.randn(num_classes, generator=g)
    if fc_norm:
        model["fc_norm.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
        model["fc_norm.bias"] = 0.1 * torch.randn(width, generator=g)
    pretrained = {"model": dict(official["cfg"]["model"]), "task": dict(official["cfg"]["task"])}
    cfg = {
        "model": {
            "_name": "mae_image_classification", "num_classes": num_classes, "prediction_mode": prediction_mode,
            "audio_mae": True, "esc50_eval": False, "spcv2_eval": False, "target_length": 1024,
            "norm_eps": None, "pretrained_model_args": pretrained,
        },
        "task": {"_name": "mae_image_classification", "target_length": 1024},
    }
    task_state = {}
    if labels:
        task_state = {
            "label_ids": [f"/m/{i:03d}" for i in range(num_classes)],
            "label_names": [f"Sound {i}, kind {chr(65 + i)}" for i in range(num_classes)],
        }
    return {"cfg": cfg, "model": model, "task_state": task_state, "optimizer_history": [], "extra_state": {}}


def write_wav(path: Path, seconds: float, rate: int = 16000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.astype(np.float32), rate, subtype="FLOAT" if path.suffix == ".wav" else None)
    return path


def load_official(golden_dir: Path) -> Dict:
    return torch.load(golden_dir / "official_eat_tiny_checkpoint.pt", map_location="cpu", weights_only=True)


def encoder_tensors(model_state: Dict, teacher: bool = False) -> Dict[str, torch.Tensor]:
    """The official-name encoder tensors of a pre-training ``model`` dict (student or ``_ema``)."""
    from sslam_plugin.checkpoints.official_names import is_official_encoder_name

    source = model_state["_ema"] if teacher else model_state
    return {k: v for k, v in source.items() if is_official_encoder_name(k)}

