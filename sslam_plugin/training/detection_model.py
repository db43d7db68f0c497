"""The registered frame-level detection model: a pre-trained encoder with a frame head.

Fine-tuning trains everything (optionally with layer-wise lr decay); the frozen-encoder variant
(``linear_eval``) trains only the head's LayerNorm and linear layer. The state dict holds the
core module's names (``detector.encoder.*``, ``detector.norm.*``, ``detector.head.*``), which
:func:`sslam_plugin.detection.detector.load_detector` reads back without fairseq.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import II

from ..checkpoints import load_any
from ..config_utils import as_config
from ..detection.head import FrameDetector
from ..models.encoder import EncoderConfig
from .model import assign_parameter_groups
from .resume import resolve_model_path

logger = logging.getLogger(__name__)

__all__ = ["DetectionModelConfig", "SSLAMFrameDetectorModel"]


@dataclass
class DetectionModelConfig(FairseqDataclass):
    model_path: Optional[str] = field(
        default=None, metadata={"help": "pre-trained checkpoint (this plugin's or official); None = random init"}
    )
    use_teacher: bool = field(default=False, metadata={"help": "start from the EMA teacher instead of the student"})
    trust_checkpoint: bool = field(
        default=False, metadata={"help": "allow the full (pickle) loader for model_path; only for files you trust"}
    )
    encoder: EncoderConfig = field(
        default_factory=EncoderConfig, metadata={"help": "architecture; replaced by model_path's when given"}
    )
    linear_eval: bool = field(default=False, metadata={"help": "freeze the encoder; train the frame head only"})
    frozen_encoder_eval_mode: bool = field(
        default=True, metadata={"help": "linear_eval: run the frozen encoder in eval mode (no stochastic depth)"}
    )
    row_pooling: str = field(
        default="mean",
        metadata={"help": "a patch row's vector: 'mean' of its frequency patches (D) or 'concat' of them (Fq * D)"},
    )
    drop_path_rate: float = field(default=0.1, metadata={"help": "stochastic depth of the last block (0 at the first)"})
    layer_decay: float = field(default=1.0, metadata={"help": "layer-wise lr decay: block i of D gets layer_decay^(D - i)"})
    exempt_norms_biases_from_decay: bool = field(
        default=True, metadata={"help": "train norms, biases and the CLS token without weight decay"}
    )
    hop: float = II("task.hop")


@register_model("sslam_frame_detector", dataclass=DetectionModelConfig)
class SSLAMFrameDetectorModel(BaseFairseqModel):
    def __init__(self, cfg: DetectionModelConfig, encoder_cfg: EncoderConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        frames_per_row = int(round(encoder_cfg.patch_size * 0.01 / cfg.hop))
        self.detector = FrameDetector(
            encoder_cfg,
            num_classes,
            frames_per_row=frames_per_row,
            freeze_encoder=cfg.linear_eval,
            frozen_encoder_eval_mode=cfg.frozen_encoder_eval_mode,
            row_pooling=cfg.row_pooling,
        )
        if cfg.exempt_norms_biases_from_decay:
            assign_parameter_groups(self.detector, self.detector.no_weight_decay())
        scales = self.detector.lr_scales(cfg.layer_decay)
        for name, param in self.detector.named_parameters():
            if param.requires_grad and scales[name] != 1.0:
                param.optim_overrides = {"optimizer": {"lr_scale": scales[name]}}

    @classmethod
    def build_model(cls, cfg: DetectionModelConfig, task=None) -> "SSLAMFrameDetectorModel":
        if not 0.0 <= cfg.drop_path_rate < 1.0:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {cfg.drop_path_rate}")
        if not 0.0 < cfg.layer_decay <= 1.0:
            raise ValueError(f"model.layer_decay must be in (0, 1], got {cfg.layer_decay}")
        encoder_cfg = as_config(cfg.encoder, EncoderConfig)
        start = None
        if cfg.model_path:
            start = load_any(resolve_model_path(cfg.model_path), trust=cfg.trust_checkpoint, teacher=cfg.use_teacher)
            encoder_cfg = start.encoder
        encoder_cfg = dataclasses.replace(
            encoder_cfg, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, post_mlp_dropout=0.0,
            start_drop_path=0.0, end_drop_path=cfg.drop_path_rate,
        )
        model = cls(cfg, encoder_cfg, task.num_classes)
        if start is not None:
            model.detector.encoder.load_state_dict(start.encoder_state, strict=True)
            logger.info("encoder weights from %s (%s)", cfg.model_path, "teacher" if cfg.use_teacher else "student")
        return model

    def forward(self, source: torch.Tensor, **unused) -> Dict[str, Any]:
        """(B, 1, T, M) -> {"frame_logits": (B, F, C)}."""
        return {"frame_logits": self.detector(source)}

