"""The registered criterion: a weighted sum of the model's named loss terms."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Union

import torch
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

from ..vocabulary import LEGACY_NAMES, current_name

__all__ = ["SSLAMWeightedLossesConfig", "SSLAMWeightedLossesCriterion"]

logger = logging.getLogger(__name__)

AVERAGED_LOGS_KEY = "_batches"


@dataclass
class SSLAMWeightedLossesConfig(FairseqDataclass):
    loss_weights: Dict[str, float] = field(
        default_factory=dict, metadata={"help": "weight of each named loss term (default 1)"}
    )
    log_keys: List[str] = field(
        default_factory=lambda: ["pred_var", "target_var", "ema_decay", "masked_pct"],
        metadata={"help": "model logs to record"},
    )


def scalars_to_floats(values: Sequence[Union[torch.Tensor, float]], like: torch.Tensor) -> List[float]:
    """Python floats of scalar tensors and numbers, read from the device in one copy (float64: exact
    for float32 values and for counts below 2**53)."""
    def as_float64(value: Union[torch.Tensor, float]) -> torch.Tensor:
        if torch.is_tensor(value):
            return value.detach().to(like.device, torch.float64).reshape(())
        return torch.tensor(float(value), dtype=torch.float64, device=like.device)

    return torch.stack([as_float64(v) for v in values]).tolist()


@register_criterion("sslam_weighted_losses", dataclass=SSLAMWeightedLossesConfig)
class SSLAMWeightedLossesCriterion(FairseqCriterion):
    """``loss = sum_k weight_k * loss_k``; fairseq divides by ``sample_size`` (masked patches).

    Each term is logged on its own (base 2, per masked patch, like the total), except the
    utterance terms: they are sums over the batch's clips scaled by ``sample_size`` (so that they
    keep their weight in the total), and are logged per clip instead, so that their curves do not
    move with the batch size (a ragged last batch, another ``dataset.batch_size``).
    """

    def __init__(self, cfg: SSLAMWeightedLossesConfig, task):
        super().__init__(task)
        self.loss_weights = dict(cfg.loss_weights)
        for old in [name for name in self.loss_weights if name in LEGACY_NAMES["loss_term"]]:
            # loss terms renamed in 0.2; the old names still load
            new = current_name("loss_term", old, f"criterion.loss_weights.{old}")
            self.loss_weights.setdefault(new, self.loss_weights.pop(old))
        self.log_keys = list(cfg.log_keys)

    def forward(self, model, sample, reduce: bool = True):
        out = model(**sample["net_input"])
        sample_size = out["sample_size"]
        unknown = set(self.loss_weights) - set(out["losses"])
        if unknown:
            raise KeyError(
                f"criterion.loss_weights names {sorted(unknown)}, but the model returns {sorted(out['losses'])}"
            )
        names = sorted(out["losses"])
        weighted = [out["losses"][name].float() * self.loss_weights.get(name, 1.0) for name in names]
        loss = sum(weighted)
        logged_keys = [key for key in self.log_keys if key in out["logs"]]
        # One device-to-host copy for all the logged numbers: on a GPU each read makes the host wait
        # for the queue before it can go on to queue the backward, so one wait instead of about ten.
        values = iter(scalars_to_floats([sample_size, *weighted, loss, *(out["logs"][k] for k in logged_keys)], loss))
        count = next(values)
        # Every rank must send the same keys in the same order: fairseq sums
        # the logs of all ranks as one flat vector.
        log = {"sample_size": count, "nsentences": sample["id"].numel(), "ntokens": count}
        clips = sample["id"].numel()
        for name in names:
            value = next(values)
            # utterance terms: sum over clips x sample_size; / clips makes the reduced figure per clip
            log[f"loss_{name}"] = value / max(clips, 1) if name.startswith("utterance") else value
        log["loss"] = next(values)
        log.update((key, next(values)) for key in logged_keys)
        log[AVERAGED_LOGS_KEY] = 1  # summed with the logs: how many batches the averages cover
        return loss, sample_size, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        """Losses per masked patch (base 2); the other logs averaged over batches and ranks."""
        sample_size = max(sum(log.get("sample_size", 0) for log in logging_outputs), 1.0)
        batches = max(sum(log.get(AVERAGED_LOGS_KEY, 0) for log in logging_outputs), 1)
        metrics.log_scalar("sample_size", sample_size)
        keys = set().union(*(log.keys() for log in logging_outputs)) if logging_outputs else set()
        for key in sorted(keys - {"sample_size", "nsentences", "ntokens", AVERAGED_LOGS_KEY}):
            total = sum(log.get(key, 0) for log in logging_outputs)
            if key == "loss" or key.startswith("loss_"):
                metrics.log_scalar(key, total / sample_size / math.log(2), sample_size, round=4)
            else:
                metrics.log_scalar(key, total / batches, batches, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # Sums travel between ranks as one all-reduce (and need no CUDA-only gather).
        return True
