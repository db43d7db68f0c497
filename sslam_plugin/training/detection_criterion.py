"""The registered detection criterion: frame BCE on strong clips, pooled clip BCE on weak clips.

loss = sum over strong clips of the frame BCE (mean over frames and classes, soft coverage
targets) + ``weak_weight`` x sum over weak clips of the clip BCE (mean over classes, clip
probability pooled from the frame probabilities, :func:`sslam_plugin.detection.head.linear_softmax_pool`),
divided by the batch's clips (fairseq divides by ``sample_size``). Both kinds can share a batch.

Validation also logs ``frame_f1``: the micro F1 of the strong clips' frames at threshold 0.5
(targets >= 0.5 count as active), summed over the split, so ``checkpoint.best_checkpoint_metric``
can select on it. Event-based F1 and PSDS come from ``sslam-evaluate`` (sed_eval, sed_scores_eval).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from ..detection.head import FrameDetector

__all__ = ["DetectionCriterionConfig", "SSLAMDetectionCriterion"]


@dataclass
class DetectionCriterionConfig(FairseqDataclass):
    weak_weight: float = field(default=1.0, metadata={"help": "weight of the weak clips' pooled clip loss"})
    clip_pooling: str = field(
        default="linear_softmax", metadata={"help": "frame probabilities -> clip probability: linear_softmax or max"}
    )


@register_criterion("sslam_detection", dataclass=DetectionCriterionConfig)
class SSLAMDetectionCriterion(FairseqCriterion):
    def __init__(self, cfg: DetectionCriterionConfig, task):
        super().__init__(task)
        if cfg.weak_weight < 0:
            raise ValueError(f"criterion.weak_weight must be >= 0, got {cfg.weak_weight}")
        if cfg.clip_pooling not in ("linear_softmax", "max"):
            raise ValueError(f"criterion.clip_pooling must be linear_softmax or max, got {cfg.clip_pooling!r}")
        self.weak_weight = cfg.weak_weight
        self.clip_pooling = cfg.clip_pooling

    def forward(self, model, sample, reduce: bool = True):
        logits = model(**sample["net_input"])["frame_logits"].float()  # (B, F, C)
        strong = sample["strong"].to(logits.device)  # (B,)
        frame_target = sample["frame_target"].to(logits)  # (B, F, C)
        frame_loss = logits.new_zeros(())
        clip_loss = logits.new_zeros(())
        if strong.any():
            per_clip = F.binary_cross_entropy_with_logits(logits[strong], frame_target[strong], reduction="none")
            frame_loss = per_clip.mean(dim=(1, 2)).sum()
        weak = ~strong
        if weak.any():
            probs = FrameDetector.clip_probabilities(logits[weak], self.clip_pooling).clamp(1e-7, 1 - 1e-7)
            clip_loss = F.binary_cross_entropy(probs, sample["clip_target"].to(logits)[weak], reduction="none").mean(dim=1).sum()
        loss = frame_loss + self.weak_weight * clip_loss
        sample_size = logits.shape[0]
        log = {
            "loss": loss.item(),
            "frame_loss": frame_loss.item(),
            "clip_loss": clip_loss.item(),
            "strong_clips": int(strong.sum()),
            "sample_size": sample_size,
            "nsentences": sample_size,
            "ntokens": sample_size,
        }
        if not model.training and strong.any():
            active = torch.sigmoid(logits[strong]) >= 0.5
            truth = frame_target[strong] >= 0.5
            log["_tp"] = int((active & truth).sum())
            log["_fp"] = int((active & ~truth).sum())
            log["_fn"] = int((~active & truth).sum())
        return loss, sample_size, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs) or 1
        metrics.log_scalar("loss", sum(log.get("loss", 0.0) for log in logging_outputs) / sample_size, sample_size, round=4)
        strong = sum(log.get("strong_clips", 0) for log in logging_outputs)
        weak = sample_size - strong
        if strong:
            metrics.log_scalar("frame_loss", sum(log.get("frame_loss", 0.0) for log in logging_outputs) / strong, strong, round=4)
        if weak > 0 and any(log.get("clip_loss", 0.0) for log in logging_outputs):
            metrics.log_scalar("clip_loss", sum(log.get("clip_loss", 0.0) for log in logging_outputs) / weak, weak, round=4)
        if any("_tp" in log for log in logging_outputs):
            for key in ("_tp", "_fp", "_fn"):
                metrics.log_scalar_sum(key, sum(log.get(key, 0) for log in logging_outputs))
            metrics.log_derived("frame_f1", lambda meters: round(_f1(meters), 5))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return False


def _f1(meters) -> float:
    tp, fp, fn = (meters[k].sum for k in ("_tp", "_fp", "_fn"))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
