"""The registered pre-training model: a thin fairseq wrapper around BootstrapPretrainer.

Its state dict uses the official EAT/SSLAM names (teacher under ``_ema``), so
official checkpoints load as initial weights and ours load into official code.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import DictConfig, OmegaConf

from ..checkpoint_layout import pretrainer_from_official, pretrainer_to_official
from ..config_utils import dataclass_from_dict
from ..models.pretraining import BootstrapPretrainer, PretrainingConfig

logger = logging.getLogger(__name__)

__all__ = ["SSLAMPretrainingModelConfig", "SSLAMPretrainingModel", "NO_WEIGHT_DECAY_GROUP"]

NO_WEIGHT_DECAY_GROUP = "no_weight_decay"


@dataclass
class SSLAMPretrainingModelConfig(FairseqDataclass, PretrainingConfig):
    pass


def core_config(cfg: Any) -> PretrainingConfig:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg.__dict__)
    return dataclass_from_dict(PretrainingConfig, data)


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norms, biases, the CLS token (and the position buffer, which has no gradient)."""
    return param.dim() == 1 or name.endswith(".bias") or name.endswith("cls_token")


@register_model("sslam_pretraining", dataclass=SSLAMPretrainingModelConfig)
class SSLAMPretrainingModel(BaseFairseqModel):
    def __init__(self, cfg: PretrainingConfig):
        super().__init__()
        self.pretrainer = BootstrapPretrainer(cfg)
        self.num_updates = 0
        # fairseq's composite optimizer (dynamic_groups) puts these in the
        # optimizer group of that name; the configs give it weight_decay 0.
        for name, param in self.pretrainer.named_parameters():
            if param.requires_grad and no_weight_decay(name, param):
                param.param_group = NO_WEIGHT_DECAY_GROUP

    @classmethod
    def build_model(cls, cfg: SSLAMPretrainingModelConfig, task=None) -> "SSLAMPretrainingModel":
        return cls(core_config(cfg))

    def forward(self, source: torch.Tensor, mask: torch.Tensor, **unused) -> Dict[str, Any]:
        out = self.pretrainer(source, mask)
        logs = dict(out.logs)
        logs["ema_decay"] = torch.tensor(self.pretrainer.ema_decay)
        return {"losses": out.losses, "sample_size": out.sample_size, "logs": logs}

    def set_num_updates(self, num_updates: int) -> None:
        super().set_num_updates(num_updates)
        # Step the teacher once per optimiser update; a jump (resuming) only
        # records the count, since the teacher was restored with the checkpoint.
        if self.training and num_updates == self.num_updates + 1:
            self.pretrainer.ema_step(num_updates)
        self.num_updates = num_updates

    # --------------------------------------------------------- checkpoint names
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        official = pretrainer_to_official(self.pretrainer.state_dict(keep_vars=keep_vars))
        out = destination if destination is not None else OrderedDict()
        for name, value in official.items():
            out[prefix + name] = value
        return out

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg: Optional[Any] = None, args=None):
        internal = pretrainer_from_official(state_dict)
        return self.pretrainer.load_state_dict(internal, strict=strict)
