"""The registered classification model: a pre-trained encoder with a linear head.

Fine-tuning trains everything (optionally with layer-wise lr decay); linear
evaluation (``linear_eval``) freezes the encoder (no gradients; in training
mode, as the official runs, unless ``frozen_encoder_eval_mode``) and trains
only fc_norm and the head. A fine-tuned ``model_path`` whose head was trained
for the task's labels keeps that head. The state dict uses the official fine-tuned layout
(encoder under ``model.``, then ``fc_norm.*`` and ``head.*``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from fairseq.models import BaseFairseqModel, register_model

from ..augment import AugmentationPolicy
from ..checkpoints.official_names import finetuned_from_official, finetuned_to_official
from ..config_utils import as_config
from ..checkpoints import load_any
from ..checkpoints.export_format import EncoderExport
from ..data.labels import are_placeholders
from ..models.classifier import AudioClassifier
from ..models.encoder import EncoderConfig
from ..vocabulary import parse_pooling
from .model import WeightDecayOptions, assign_parameter_groups
from .resume import resolve_model_path

logger = logging.getLogger(__name__)

__all__ = ["ClassifierModelConfig", "SSLAMClassifierModel"]


@dataclass
class ClassifierModelConfig(WeightDecayOptions):
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
    linear_eval: bool = field(default=False, metadata={"help": "freeze the encoder; train fc_norm and the head only"})
    frozen_encoder_eval_mode: bool = field(
        default=False,
        metadata={
            "help": "linear_eval: run the frozen encoder in eval mode (no stochastic depth); the official "
            "linear evaluation ran it in training mode, so paper recipes keep this off"
        },
    )
    drop_path_rate: float = field(
        default=0.1, metadata={"help": "stochastic depth, rising linearly from 0 (first block) to this (last block)"}
    )
    layer_decay: float = field(
        default=1.0, metadata={"help": "layer-wise lr decay: block i of D gets layer_decay^(D - i) (1 = off; official 0.65)"}
    )
    layer_decay_front_end: bool = field(
        default=False,
        metadata={
            "help": "also scale the front end (patch embedding, CLS token, input norm) by layer_decay^(D + 1), "
            "as BEiT does; the official fine-tuning leaves it at 1, so paper recipes keep this off"
        },
    )
    mixup_alpha: float = field(default=0.0, metadata={"help": "mixup Beta(alpha, alpha); 0 = off"})
    mixup_prob: float = field(default=1.0, metadata={"help": "probability of mixing a batch (official recipes 0.9)"})
    specaug_ratio: float = field(
        default=0.0,
        metadata={
            "help": "SpecAugment (official mask_ratio): per clip one frequency mask narrower than ratio * mel bins "
            "and one time mask narrower than ratio * frames"
        },
    )
    specaug_before_mixup: bool = field(
        default=False, metadata={"help": "SpecAugment before mixup (official: after; paper recipes keep this off)"}
    )
    patch_mask_ratio: float = field(
        default=0.0, metadata={"help": "fraction of patches dropped from the encoder input (not in any official recipe)"}
    )


def encoder_from_checkpoint(
    path: str, use_teacher: bool, trust: bool = False
) -> Tuple[EncoderConfig, Dict[str, torch.Tensor]]:
    """Architecture and weights (our ``AudioEncoder`` names) of any supported checkpoint or export."""
    export = load_any(path, trust=trust, teacher=use_teacher)
    return export.encoder, export.encoder_state


def head_fits(start: EncoderExport, classifier: AudioClassifier, label_ids: Optional[List[str]]) -> Optional[str]:
    """None when ``start``'s head can continue training in ``classifier`` for ``label_ids``; else why not."""
    head = start.head
    if head.num_classes != classifier.head.out_features:
        return f"it has {head.num_classes} outputs, this task {classifier.head.out_features} classes"
    if head.pooling != classifier.pooling:
        return f"it pools with {head.pooling!r}, this model with {classifier.pooling!r}"
    if head.fc_norm != (classifier.fc_norm is not None):
        return "model.use_fc_norm differs from the checkpoint's"
    if label_ids is None:
        return None
    if not start.labels or are_placeholders(start.labels):
        logger.info("the checkpoint stores no label names; its %d outputs are taken as this task's classes in order", head.num_classes)
    elif [label.id for label in start.labels] != list(label_ids):
        return "its labels are not this task's label_descriptors.csv, in the same order"
    return None


@register_model("sslam_classifier", dataclass=ClassifierModelConfig)
class SSLAMClassifierModel(BaseFairseqModel):
    def __init__(self, cfg: ClassifierModelConfig, encoder_cfg: EncoderConfig, num_classes: int):
        super().__init__()
        pooling = cfg.pooling
        if cfg.prediction_mode is not None:
            logger.warning("model.prediction_mode=%s is now model.pooling", cfg.prediction_mode)
            pooling = cfg.prediction_mode
        pooling = parse_pooling(pooling, "model.pooling")
        self.cfg = cfg
        self.classifier = AudioClassifier(
            encoder_cfg,
            num_classes,
            pooling,
            cfg.use_fc_norm,
            freeze_encoder=cfg.linear_eval,
            frozen_encoder_eval_mode=cfg.frozen_encoder_eval_mode,
        )
        self.augmentation = AugmentationPolicy(
            cfg.specaug_ratio,
            cfg.mixup_alpha,
            cfg.mixup_prob,
            cfg.patch_mask_ratio,
            specaug_before_mixup=cfg.specaug_before_mixup,
        )
        self._set_optimizer_groups()

    def _set_optimizer_groups(self) -> None:
        """Each trained parameter's lr scale (layer decay) and weight-decay group for fairseq's composite optimizer."""
        if self.cfg.exempt_norms_biases_from_decay:
            assign_parameter_groups(self.classifier, self.classifier.no_weight_decay())
        scales = self.classifier.lr_scales(self.cfg.layer_decay, self.cfg.layer_decay_front_end)
        for name, param in self.classifier.named_parameters():
            if param.requires_grad and scales[name] != 1.0:
                param.optim_overrides = {"optimizer": {"lr_scale": scales[name]}}

    @classmethod
    def build_model(cls, cfg: ClassifierModelConfig, task=None) -> "SSLAMClassifierModel":
        cfg = as_config(cfg, ClassifierModelConfig)
        if not 0.0 <= cfg.drop_path_rate < 1.0:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {cfg.drop_path_rate}")
        if not 0.0 < cfg.layer_decay <= 1.0:
            raise ValueError(f"model.layer_decay must be in (0, 1], got {cfg.layer_decay}")
        start = None
        encoder_cfg = cfg.encoder
        if cfg.model_path:
            start = load_any(resolve_model_path(cfg.model_path), trust=cfg.trust_checkpoint, teacher=cfg.use_teacher)
            encoder_cfg = start.encoder  # the task records it in the run's config (checkpoints are self-contained)
        # As the official fine-tuning: no dropout; stochastic depth from 0 to drop_path_rate.
        encoder_cfg = dataclasses.replace(
            encoder_cfg,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            post_mlp_dropout=0.0,
            start_drop_path=0.0,
            end_drop_path=cfg.drop_path_rate,
        )
        model = cls(cfg, encoder_cfg, task.num_classes)
        if start is not None:
            model.classifier.encoder.load_state_dict(start.encoder_state, strict=True)
            logger.info("encoder weights from %s (%s)", cfg.model_path, "teacher" if cfg.use_teacher else "student")
            model._keep_head(start, task)
        return model

    def _keep_head(self, start: EncoderExport, task) -> None:
        """Continue from a fine-tuned checkpoint's head when it was trained for this task's labels."""
        if start.head is None:
            return
        labels = getattr(task, "labels", None)
        reason = head_fits(start, self.classifier, list(labels.ids) if labels is not None else None)
        if reason is not None:
            logger.warning("%s has a classification head, not used: %s; the head starts fresh", self.cfg.model_path, reason)
            return
        for prefix, module in (("head.", self.classifier.head), ("fc_norm.", self.classifier.fc_norm)):
            if module is not None:  # head_fits checked that fc_norm is there exactly when the checkpoint has one
                module.load_state_dict({k[len(prefix):]: v for k, v in start.head_state.items() if k.startswith(prefix)})
        logger.info("%s: continuing with its classification head (%d classes)", self.cfg.model_path, start.head.num_classes)

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
