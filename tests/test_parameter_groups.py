"""Each trained parameter's lr scale and weight decay, as fairseq's composite optimizer builds them
from a composed recipe, against the official rule for a ViT-B fine-tuning and linear-evaluation model.

The official rule (EAT ``models/EAT_audio_classification.py``, data2vec-multi branch,
and fairseq's ``optim/composite.py``): block i of D gets lr scale
``layer_decay ** (D - i)``; every other parameter 1. Every trained parameter gets
the group's weight decay: the model's request to exempt 1-D parameters and
biases (``weight_decay_scale: 0``) is ignored by the composite optimizer.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Dict, Tuple

import pytest
import torch

from conftest import REPO

pytest.importorskip("fairseq")

from fairseq.optim import build_optimizer  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from sslam_plugin.training.classifier_model import ClassifierModelConfig, SSLAMClassifierModel  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # hydra: schema matching is deprecated

VIT_B_DEPTH = 12


def official_setting(name: str, layer_decay: float, weight_decay: float) -> Tuple[float, float]:
    """(lr scale, weight decay) of a parameter by its official fine-tuned name."""
    block = re.match(r"model\.blocks\.(\d+)\.", name)
    scale = layer_decay ** (VIT_B_DEPTH - int(block.group(1))) if block else 1.0
    return scale, weight_decay


def optimizer_settings(folder: str, recipe: str, *overrides: str):
    """Compose a recipe, build its ViT-B model (random init) and fairseq's composite optimizer over it.

    Returns the composed config and {official parameter name: (peak lr, weight decay)}.
    """
    from fairseq.dataclass.initialize import hydra_init

    hydra_init(recipe)
    with initialize_config_dir(config_dir=str(REPO / "config" / folder), version_base=None):
        cfg = compose(recipe, overrides=["task.data=/unused", "model.model_path=null", *overrides])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # as fairseq-hydra-train does
    model_cfg = OmegaConf.merge(OmegaConf.structured(ClassifierModelConfig), {k: v for k, v in cfg.model.items() if k != "_name"})
    model_cfg.encoder.embed_dim, model_cfg.encoder.depth, model_cfg.encoder.num_heads = 768, VIT_B_DEPTH, 12
    torch.manual_seed(0)
    model = SSLAMClassifierModel.build_model(model_cfg, SimpleNamespace(num_classes=527, labels=None))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, params)
    names = {id(p): name for name, p in model.state_dict(keep_vars=True).items()}
    settings: Dict[str, Tuple[float, float]] = {}
    for group, sub in optimizer.optimizers.items():  # fairseq keeps these in a class-level dict: filter by id
        for param_group in sub.param_groups:
            for param in param_group["params"]:
                if id(param) in names:
                    config = optimizer.optimizers_config[group]
                    settings[names[id(param)]] = (config.lr[0], config.weight_decay)
    return cfg, model, settings


def test_vit_b_finetuning_groups_follow_the_official_rule():
    cfg, model, settings = optimizer_settings("finetune", "as20k")
    lr, decay = cfg.optimizer.groups.default.lr_float, cfg.optimizer.groups.default.optimizer.weight_decay
    assert (cfg.model.layer_decay, decay) == (0.65, 0.05)
    trained = {name for name, p in model.state_dict(keep_vars=True).items() if p.requires_grad}
    assert set(settings) == trained and len(trained) == 5 + 12 * 12 + 4  # front end (CLS, patch conv, input norm), blocks, fc_norm and head
    for name, (peak, weight_decay) in settings.items():
        scale, official_decay = official_setting(name, cfg.model.layer_decay, decay)
        assert peak == lr * scale, name  # the same float operations as fairseq's composite optimizer
        assert weight_decay == official_decay, name
    # the front end keeps the full lr (not 0.65^13); the first block gets 0.65^12
    assert settings["model.modality_encoders.IMAGE.local_encoder.proj.weight"][0] == lr
    assert settings["model.modality_encoders.IMAGE.extra_tokens"][0] == lr
    assert settings["model.blocks.0.attn.qkv.weight"][0] == lr * 0.65**12


def test_linear_evaluation_trains_fc_norm_and_head_with_weight_decay():
    cfg, model, settings = optimizer_settings("linear_eval", "as20k")
    lr, decay = cfg.optimizer.groups.default.lr_float, cfg.optimizer.groups.default.optimizer.weight_decay
    assert decay == 0.05
    assert set(settings) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    for name, (peak, weight_decay) in settings.items():
        assert (peak, weight_decay) == (lr, decay), name


def test_switches_give_this_projects_own_groups():
    cfg, _, settings = optimizer_settings(
        "finetune", "as20k", "++model.exempt_norms_biases_from_decay=true", "++model.layer_decay_front_end=true"
    )
    lr = cfg.optimizer.groups.default.lr_float
    # exempt: norms, biases and the CLS token without weight decay; matrices keep it
    for name in ("model.blocks.3.norm1.weight", "model.blocks.3.attn.qkv.bias", "head.bias", "fc_norm.weight",
                 "model.modality_encoders.IMAGE.extra_tokens", "model.modality_encoders.IMAGE.context_encoder.norm.bias"):
        assert settings[name][1] == 0.0, name
    for name in ("model.blocks.3.attn.qkv.weight", "head.weight", "model.modality_encoders.IMAGE.local_encoder.proj.weight"):
        assert settings[name][1] == 0.05, name
    # front end as layer 0 (BEiT): 0.65^13; blocks unchanged
    assert settings["model.modality_encoders.IMAGE.local_encoder.proj.weight"][0] == lr * 0.65**13
    assert settings["model.modality_encoders.IMAGE.extra_tokens"][0] == lr * 0.65**13
    assert settings["model.blocks.11.mlp.fc1.weight"][0] == lr * 0.65
    assert settings["head.weight"][0] == lr
