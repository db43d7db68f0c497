"""The registered classification criterion.

As the official fine-tuning code: multi-label data train with binary
cross-entropy summed over clips and classes and divided by the number of
positive labels in the batch; single-label data with cross-entropy (label
smoothing unless mixup is on, soft targets after mixup), or with binary
cross-entropy on one-hot targets (``single_label_bce``, the official Speech
Commands run), divided by the number of clips. The logged ``loss`` is that
mean, in nats, as the official logs print it. In validation the scores
and targets of the whole split are gathered, and ``mAP`` (multi-label) or
``accuracy`` (single-label) is computed over all of them, so
``checkpoint.best_checkpoint_metric`` can select on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging.meters import ConcatTensorMeter
from omegaconf import II

from ..metrics import accuracy, mean_average_precision

__all__ = ["ClassificationCriterionConfig", "SSLAMClassificationCriterion"]


@dataclass
class ClassificationCriterionConfig(FairseqDataclass):
    multilabel: bool = II("task.multilabel")
    label_smoothing: float = field(
        default=0.0, metadata={"help": "label smoothing (single-label cross-entropy without mixup only)"}
    )
    single_label_bce: bool = field(
        default=False, metadata={"help": "single-label data: binary cross-entropy on one-hot targets (official SPC-2)"}
    )
    multilabel_loss_per_clip: bool = field(
        default=False,
        metadata={
            "help": "multi-label data: divide the loss by the number of clips instead of the number of "
            "positive labels (official); paper recipes keep this off"
        },
    )


@register_criterion("sslam_classification", dataclass=ClassificationCriterionConfig)
class SSLAMClassificationCriterion(FairseqCriterion):
    def __init__(self, cfg: ClassificationCriterionConfig, task):
        super().__init__(task)
        if not 0.0 <= cfg.label_smoothing < 1.0:
            raise ValueError(f"criterion.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
        self.multilabel = cfg.multilabel
        self.label_smoothing = cfg.label_smoothing
        self.single_label_bce = cfg.single_label_bce
        self.multilabel_loss_per_clip = cfg.multilabel_loss_per_clip

    def forward(self, model, sample, reduce: bool = True):
        target = sample["target"].float()
        out = model(**sample["net_input"], target=target)
        logits, target = out["logits"].float(), out["target"]
        sample_size = logits.shape[0]
        if self.multilabel or self.single_label_bce:
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
            if self.multilabel and not self.multilabel_loss_per_clip:
                # mixup keeps each clip's label mass, so this is the count before mixing too
                sample_size = float(target.sum())
        else:
            loss = F.cross_entropy(logits, target, label_smoothing=self._smoothing(model), reduction="sum")
        log = {
            "loss": loss.item(),
            "sample_size": sample_size,
            "nsentences": sample_size,
            "ntokens": sample_size,
            "multilabel": self.multilabel,
        }
        if not model.training:
            log["_scores"] = logits.detach().cpu()
            log["_targets"] = sample["target"].detach().cpu()
        return loss, sample_size, log

    def _smoothing(self, model) -> float:
        """The official code smooths single labels only in training without mixup (mixed targets are soft already)."""
        if not model.training:
            return 0.0
        augmentation = getattr(model, "augmentation", None)
        return 0.0 if augmentation is not None and augmentation.mixup_alpha > 0 else self.label_smoothing

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs) or 1
        loss = sum(log.get("loss", 0.0) for log in logging_outputs)
        metrics.log_scalar("loss", loss / sample_size, sample_size, round=4)
        metrics.log_scalar("sample_size", sample_size)
        scores = [log["_scores"] for log in logging_outputs if "_scores" in log]
        if not scores:
            return
        metrics.log_custom(ConcatTensorMeter, "_scores", torch.cat(scores))
        metrics.log_custom(ConcatTensorMeter, "_targets", torch.cat([log["_targets"] for log in logging_outputs]))
        if logging_outputs[0].get("multilabel", True):
            metrics.log_derived("mAP", lambda meters: round(_split_map(meters), 5))
        else:
            metrics.log_derived(
                "accuracy", lambda meters: round(accuracy(meters["_scores"].tensor, meters["_targets"].tensor), 5)
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return False


def _split_map(meters) -> float:
    return mean_average_precision(meters["_scores"].tensor, meters["_targets"].tensor)[0]
