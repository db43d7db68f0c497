"""The registered pre-training model: a thin fairseq wrapper around BootstrapPretrainer.

Its state dict uses the official EAT/SSLAM names (teacher under ``_ema``), so
official checkpoints load as initial weights and ours load into official code,
plus ``_teacher_updates``: the last update the teacher followed the student
for, which makes a resumed run step the teacher exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model

from ..checkpoints.official_names import TEACHER_UPDATES_KEY, pretrainer_from_official, pretrainer_to_official
from ..config_utils import as_config
from ..features import FbankConfig
from ..mixing import MixingConfig
from ..models.ema import ema_decay_at
from ..models.pretraining import BootstrapPretrainer, PretrainingConfig
from ..models.source_retention import SourceRetentionPretrainer
from ..randomness import seeded_generator

logger = logging.getLogger(__name__)

__all__ = ["WeightDecayOptions", "SSLAMPretrainingModelConfig", "SSLAMPretrainingModel", "NO_WEIGHT_DECAY_GROUP", "assign_parameter_groups"]

NO_WEIGHT_DECAY_GROUP = "no_weight_decay"


@dataclass
class WeightDecayOptions(FairseqDataclass):
    """The weight-decay switch both registered models take (``model.exempt_norms_biases_from_decay``)."""

    exempt_norms_biases_from_decay: bool = field(
        default=False,
        metadata={
            "help": "train norms, biases and the CLS token without weight decay (what the official code "
            "meant; its runs decayed every parameter, so paper recipes keep this off)"
        },
    )


@dataclass
class SSLAMPretrainingModelConfig(WeightDecayOptions, PretrainingConfig):
    mixing: MixingConfig = field(
        default_factory=MixingConfig, metadata={"help": "SSLAM stage 2 (partial mixtures, SRL) when enabled"}
    )


def assign_parameter_groups(module: torch.nn.Module, no_decay: set) -> None:
    """Put the trained parameters named in ``no_decay`` in the optimizer group without weight decay.

    ``no_decay``: the names the model itself declares (``module.no_weight_decay()``).
    Only with ``exempt_norms_biases_from_decay``: the official runs asked fairseq
    for the exemption in a form its composite optimizer ignores, so every
    parameter there was decayed, and paper recipes do the same.
    """
    for name, param in module.named_parameters():
        if param.requires_grad and name in no_decay:
            param.param_group = NO_WEIGHT_DECAY_GROUP


@register_model("sslam_pretraining", dataclass=SSLAMPretrainingModelConfig)
class SSLAMPretrainingModel(BaseFairseqModel):
    def __init__(
        self,
        cfg: PretrainingConfig,
        mixing: Optional[MixingConfig] = None,
        exempt_norms_biases_from_decay: bool = False,
        fbank: Optional[FbankConfig] = None,
    ):
        """``fbank``: the task's front end (the ``mean`` mixing undoes its normalisation)."""
        super().__init__()
        if mixing is not None and mixing.enabled:
            self.pretrainer: BootstrapPretrainer = SourceRetentionPretrainer(cfg, mixing, fbank)
        else:
            self.pretrainer = BootstrapPretrainer(cfg)
        self.num_updates = 0
        self.teacher_updates = 0  # the last update the teacher followed the student for
        if exempt_norms_biases_from_decay:
            # fairseq's composite optimizer (dynamic_groups) puts these in the
            # optimizer group of that name; the configs give it weight_decay 0.
            assign_parameter_groups(self.pretrainer, self.pretrainer.no_weight_decay())

    @classmethod
    def build_model(cls, cfg: SSLAMPretrainingModelConfig, task=None) -> "SSLAMPretrainingModel":
        cfg = as_config(cfg, SSLAMPretrainingModelConfig)  # a PretrainingConfig holding a MixingConfig
        fbank_config = getattr(task, "fbank_config", None)  # the pre-training task's front end
        return cls(cfg, cfg.mixing, cfg.exempt_norms_biases_from_decay, fbank_config() if fbank_config else None)

    def forward(
        self, source: torch.Tensor, mask: torch.Tensor, batch_seed: Optional[int] = None, **unused
    ) -> Dict[str, Any]:
        """One step's named losses.

        Args:
            source: (B, 1, T, M) features; mask: (B * C, L) bool, True = masked.
            batch_seed: seeds this batch's decoder noise and mixing draws (see
                ``sslam_plugin.randomness``); None uses the global generator
                and the model's own.
        """
        kwargs: Dict[str, Any] = {}
        if batch_seed is not None:
            kwargs["noise_generator"] = seeded_generator(batch_seed, 0, source.device)
            if isinstance(self.pretrainer, SourceRetentionPretrainer):
                kwargs["mixing_generator"] = seeded_generator(batch_seed, 1 + self.pretrainer.mixing.seed)
        out = self.pretrainer(source, mask, **kwargs)
        logs = dict(out.logs)
        logs["ema_decay"] = torch.tensor(self.ema_decay())
        return {"losses": out.losses, "sample_size": out.sample_size, "logs": logs}

    def ema_decay(self) -> float:
        """The decay of the teacher step that ends update ``num_updates`` (a pure function of it)."""
        cfg = self.pretrainer.cfg
        return ema_decay_at(self.num_updates, cfg.ema_decay, cfg.ema_end_decay, cfg.ema_anneal_end_step)

    def set_num_updates(self, num_updates: int) -> None:
        """Step the teacher once per finished optimiser update.

        fairseq calls this with N at the start of update N + 1, once per
        micro-batch, and also while loading a checkpoint. The teacher follows
        the student for update N exactly when it last did so for N - 1; any
        other jump (a new schedule, or the call made before a checkpoint's
        weights and ``_teacher_updates`` are loaded) only records N.
        """
        super().set_num_updates(num_updates)
        if self.training and num_updates == self.teacher_updates + 1:
            self.pretrainer.ema_step(num_updates)
        self.teacher_updates = num_updates
        self.num_updates = num_updates

    # --------------------------------------------------------- checkpoint names
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        official = pretrainer_to_official(self.pretrainer.state_dict(keep_vars=keep_vars))
        official[TEACHER_UPDATES_KEY] = torch.tensor(self.teacher_updates)
        out = destination if destination is not None else OrderedDict()
        for name, value in official.items():
            out[prefix + name] = value
        return out

    def load_state_dict(self, state_dict, strict: bool = True, model_cfg: Optional[Any] = None, args=None):
        """Load official-layout weights (ours, or an official EAT/SSLAM checkpoint).

        ``_teacher_updates`` is optional: without it (an official checkpoint)
        the count set by fairseq's ``set_num_updates`` stands.
        """
        if TEACHER_UPDATES_KEY in state_dict:
            self.teacher_updates = int(state_dict[TEACHER_UPDATES_KEY])
        result = self.pretrainer.load_state_dict(pretrainer_from_official(state_dict), strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"checkpoint does not fit the configured model: missing {missing}, unexpected {unexpected}; "
                "check model.encoder / model.decoder sizes against the checkpoint"
            )
        return result
