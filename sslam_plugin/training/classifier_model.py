"""The registered classification model: a pre-trained encoder with a linear head.

Fine-tuning trains everything (optionally with layer-wise lr decay); linear
evaluation (``linear_eval``) freezes the encoder in eval mode and trains only
fc_norm and the head. The state dict uses the official fine-tuned layout
(encoder under ``model.``, then ``fc_norm.*`` and ``head.*``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import DictConfig, OmegaConf, open_dict

from ..augment import AugmentationPolicy
from ..checkpoints.official_names import finetuned_from_official, finetuned_to_official
from ..config_utils import dataclass_from_dict
from ..checkpoints import load_any
from ..models.classifier import AudioClassifier, pooling_name
from ..models.encoder import EncoderConfig
from .model import assign_parameter_groups
from .resume import resolve_model_path

logger = logging.getLogger(__name__)

__all__ = ["ClassifierModelConfig", "SSLAMClassifierModel"]


@dataclass
class ClassifierModelConfig(FairseqDataclass):
    model_path: Optional[str] = field(
        default=None,
        metadata={"help": "pre-trained or fine-tuned checkpoint (this plugin's or official); None = random init"},
    )
    use_teacher: bool = field(default=False, metadata={"help": "start from the EMA teacher instead of the student"})
    trust_checkpoint: bool = field(
        default=False, metadata={"help": "allow the full (pickle) loader for model_path; only for files you trust"}
    )
    encoder: EncoderConfig = field(
        default_factory=EncoderConfig, metadata={"help": "architecture; replaced by model_path's when given"}
    )
    pooling: str = field(default="cls", metadata={"help": "clip embedding: cls (the CLS token) or mean (of the patches)"})
    prediction_mode: Optional[str] = field(
        default=None, metadata={"help": "the name of model.pooling before 0.2 (CLS_TOKEN or MEAN_POOLING); still read"}
    )
    use_fc_norm: bool = field(default=True, metadata={"help": "LayerNorm on the pooled embedding"})
    linear_eval: bool = field(default=False, metadata={"help": "freeze the encoder (eval mode); train the head only"})
    drop_path_rate: float = field(default=0.1, metadata={"help": "stochastic depth of the last block when fine-tuning"})
    layer_decay: float = field(default=1.0, metadata={"help": "layer-wise lr decay (1 = off; official 0.65)"})
    mixup_alpha: float = field(default=0.0, metadata={"help": "mixup Beta(alpha, alpha); 0 = off"})
    mixup_prob: float = field(default=1.0, metadata={"help": "probability of mixing a batch"})
    specaug_ratio: float = field(
        default=0.0, metadata={"help": "SpecAugment widths: up to ratio * mel bins and ratio * frames"}
    )
    patch_mask_ratio: float = field(default=0.0, metadata={"help": "fraction of patches dropped from the encoder input"})


def encoder_from_checkpoint(
    path: str, use_teacher: bool, trust: bool = False
) -> Tuple[EncoderConfig, Dict[str, torch.Tensor]]:
    """Architecture and weights (our ``AudioEncoder`` names) of any supported checkpoint or export."""
    export = load_any(path, trust=trust, teacher=use_teacher)
    return export.encoder, export.encoder_state


@register_model("sslam_classifier", dataclass=ClassifierModelConfig)
class SSLAMClassifierModel(BaseFairseqModel):
    def __init__(self, cfg: ClassifierModelConfig, encoder_cfg: EncoderConfig, num_classes: int):
        super().__init__()
        pooling = cfg.pooling
        if cfg.prediction_mode is not None:
            logger.warning("model.prediction_mode=%s is now model.pooling", cfg.prediction_mode)
            pooling = cfg.prediction_mode
        try:
            pooling = pooling_name(pooling)
        except ValueError as err:
            raise ValueError(f"model.pooling: {err}") from err
        self.cfg = cfg
        self.classifier = AudioClassifier(encoder_cfg, num_classes, pooling, cfg.use_fc_norm, freeze_encoder=cfg.linear_eval)
        self.augmentation = AugmentationPolicy(cfg.specaug_ratio, cfg.mixup_alpha, cfg.mixup_prob, cfg.patch_mask_ratio)
        self._set_optimizer_groups(encoder_cfg.depth)

    def _set_optimizer_groups(self, depth: int) -> None:
        """The groups and lr scales the classifier declares (no weight decay, layer decay)."""
        assign_parameter_groups(self.classifier, self.classifier.no_weight_decay())
        if self.cfg.layer_decay == 1.0:
            return
        for name, param in self.classifier.named_parameters():
            if param.requires_grad:
                scale = self.cfg.layer_decay ** (depth + 1 - self.classifier.layer_depth(name))
                param.optim_overrides = {"optimizer": {"lr_scale": scale}}

    @classmethod
    def build_model(cls, cfg: ClassifierModelConfig, task=None) -> "SSLAMClassifierModel":
        weights = None
        encoder_cfg = dataclass_from_dict(EncoderConfig, _as_dict(cfg.encoder))
        if cfg.model_path:
            encoder_cfg, weights = encoder_from_checkpoint(
                resolve_model_path(cfg.model_path), cfg.use_teacher, cfg.trust_checkpoint
            )
            if isinstance(cfg, DictConfig):  # saved with the checkpoint: it is self-contained
                with open_dict(cfg):
                    cfg.encoder = OmegaConf.structured(encoder_cfg)
        if not cfg.linear_eval:
            encoder_cfg = dataclasses.replace(encoder_cfg, end_drop_path=cfg.drop_path_rate)
        model = cls(cfg, encoder_cfg, task.num_classes)
        if weights is not None:
            model.classifier.encoder.load_state_dict(weights, strict=True)
            logger.info("encoder weights from %s (%s)", cfg.model_path, "teacher" if cfg.use_teacher else "student")
        return model

    def forward(self, source: torch.Tensor, target: Optional[torch.Tensor] = None, **unused) -> Dict[str, Any]:
        """(B, 1, T, M) -> {"logits": (B, C), "target": (B, C) after mixup}."""
        mask = None
        if self.training:
            rows, cols = self.classifier.encoder.patch_grid(source.shape[2])
            source, target, mask = self.augmentation.apply(source, target, rows * cols)
        return {"logits": self.classifier(source, mask), "target": target}

    # --------------------------------------------------------- checkpoint names
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        state = self.classifier.state_dict(keep_vars=keep_vars)
        encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        head = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        out = destination if destination is not None else OrderedDict()
        for name, value in finetuned_to_official(encoder, head).items():
            out[prefix + name] = value
        return out

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg: Optional[Any] = None, args=None):
        encoder, head = finetuned_from_official(state_dict)
        internal = {"encoder." + k: v for k, v in encoder.items()}
        internal.update(head)
        return self.classifier.load_state_dict(internal, strict=strict)


def _as_dict(cfg: Any) -> Dict[str, Any]:
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
