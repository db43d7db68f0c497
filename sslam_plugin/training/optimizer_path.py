"""The optimiser a training run steps, built outside a run: fairseq's, from a composed recipe, as its trainer builds it.

Used to measure and test the code that trains (``sslam-benchmark pretraining``,
the fairseq adapter's tests) instead of a look-alike: fairseq's composite
optimiser with the recipe's Adam groups, wrapped in fairseq's
``FP16Optimizer`` for fp16/bf16 (``common.fp16_no_flatten_grads`` as in the
recipes), and one update as ``Trainer.train_step`` does it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Sequence

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

__all__ = ["compose_recipe", "build_optimizer", "optimizer_update"]


def compose_recipe(config_dir: Path, name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The whole config ``fairseq-hydra-train --config-dir CONFIG_DIR --config-name NAME OVERRIDES`` runs with."""
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    hydra_init(name)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        cfg = compose(name, overrides=list(overrides))
    with open_dict(cfg):
        add_defaults(cfg)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def build_optimizer(cfg: DictConfig, params: List[torch.nn.Parameter], num_updates: int = 0) -> Any:
    """fairseq's optimiser for ``params`` as ``fairseq.trainer.Trainer`` builds it, its lr schedule at ``num_updates``."""
    from fairseq import optim
    from fairseq.optim import lr_scheduler

    if cfg.common.fp16 or cfg.common.bf16:
        optimizer = optim.FP16Optimizer.build_optimizer(cfg, params)
    else:
        optimizer = optim.build_optimizer(cfg.optimizer, params)
    scheduler = lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, optimizer)
    scheduler.step_update(num_updates)
    return optimizer


def optimizer_update(optimizer: Any, loss: torch.Tensor, sample_size: float, clip_norm: float) -> torch.Tensor:
    """One update as ``Trainer.train_step`` does it: backward, scale by the sample size, clip, step, zero.

    Returns the gradient norm before clipping.
    """
    optimizer.backward(loss)
    optimizer.multiply_grads(1.0 / float(sample_size))
    norm = optimizer.clip_grad_norm(clip_norm)
    optimizer.step()
    optimizer.zero_grad()
    return norm
