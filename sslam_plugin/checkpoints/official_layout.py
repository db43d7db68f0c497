"""Writing checkpoints the public EAT / SSLAM fairseq code loads as its own.

Reading official checkpoints is :mod:`.fairseq_layout`; this module writes them:

* pre-trained (an export without a head): ``cfg.model`` is a complete
  ``data2vec_multi`` config and ``cfg.task`` a complete ``mae_image_pretraining``
  config (the key sets of a checkpoint the official trainer writes,
  ``reference/golden`` and ``official_checkpoint_layout_vitb.txt``); ``model`` holds
  the student under official names, the pre-training decoder when one is
  given (else ``modalities.image.decoder`` is null, so the official model is
  built without one and loads strictly), and the EMA teacher under ``_ema``
  (the student again when no teacher is given);
* fine-tuned (an export with a head): ``cfg.model`` is a ``mae_image_classification``
  config whose ``pretrained_model_args`` holds the two configs above (the
  official fine-tuning model builds its encoder from them instead of reading
  ``model_path``), ``cfg.task`` the ``mae_image_classification`` task;
  ``model`` holds the encoder under ``model.`` plus ``fc_norm.*`` / ``head.*``,
  and ``task_state["labels"]`` the label -> index map the official task would
  read from ``label_descriptors.csv``.

The official code reads configs in omegaconf's struct mode, where an unknown key
is an error: only the fields its dataclasses declare are written
(:mod:`.official_config`). What has no field there (a normalisation other than AudioSet / ESC-50 / SPC-2, label
names) goes to ``extra_state`` / ``task_state``, which this package reads back.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from .errors import CheckpointError
from .export_format import EncoderExport
from .official_config import classification_config, decoder_config, model_config, norm_flags, recipe_decoder, task_config
from .official_names import (
    TEACHER_KEY,
    encoder_to_official,
    finetuned_to_official,
    is_official_decoder_name,
    is_official_encoder_name,
)

__all__ = [
    "OFFICIAL_FC_NORM_EPS",
    "official_checkpoint_from_export",
    "pretraining_extras",
    "save_official_checkpoint",
]

logger = logging.getLogger(__name__)


# the official fine-tuning model's fc_norm: nn.LayerNorm(embed_dim, eps=1e-6)
OFFICIAL_FC_NORM_EPS = 1e-6


# ------------------------------------------------------------------ state
def pretraining_extras(
    ckpt: Mapping[str, Any], source: str = "checkpoint"
) -> Tuple[Optional[Dict[str, torch.Tensor]], Optional[Dict[str, torch.Tensor]]]:
    """(decoder, EMA teacher) of a pre-training checkpoint in official names, or None where absent.

    Official EAT/SSLAM checkpoints and this plugin's share these names, so the
    decoder and teacher can be carried into an official checkpoint unchanged.
    """
    model = ckpt.get("model") if isinstance(ckpt, Mapping) else None
    if not isinstance(model, Mapping):
        return None, None
    decoder = {k: v for k, v in model.items() if isinstance(k, str) and is_official_decoder_name(k)}
    ema = model.get(TEACHER_KEY)
    teacher = None
    if isinstance(ema, Mapping):
        teacher = {k: v for k, v in ema.items() if is_official_encoder_name(k)}
    return decoder or None, teacher or None


def official_checkpoint_from_export(
    export: EncoderExport,
    decoder: Optional[Mapping[str, torch.Tensor]] = None,
    teacher: Optional[Mapping[str, torch.Tensor]] = None,
) -> Dict[str, Any]:
    """A checkpoint in the official EAT/SSLAM layout (pre-trained, or fine-tuned when the export has a head).

    Args:
        export: the encoder (and head).
        decoder: the pre-training decoder in official names
            (``modality_encoders.IMAGE.decoder.*``); without it the config has no
            decoder: the official code fine-tunes from or extracts features with
            the checkpoint, but cannot continue pre-training it.
        teacher: the EMA teacher's encoder in official names; default: the student.

    Raises:
        CheckpointError: an architecture the official code cannot build.
    """
    enc = export.encoder
    if enc.num_mel_bins != 128:
        raise CheckpointError(
            f"the official EAT code builds 128-mel-bin encoders only; this one takes {enc.num_mel_bins} mel bins"
        )
    decoder_cfg = None
    if decoder:
        decoder_cfg = decoder_config(decoder, enc.embed_dim)
        if decoder_cfg is None:
            logger.warning("the decoder's tensors are not the official CNN decoder's; writing the checkpoint without it")
            decoder = None
    flags, norms_carried = norm_flags(export)
    extra_state: Dict[str, Any] = {"converted_from": export.source, "weights": export.weights}
    if not norms_carried:
        logger.warning(
            "normalisation mean %g, std %g has no flag in the official code (which knows AudioSet, ESC-50 "
            "and SPC-2); it is stored in extra_state['sslam_frontend'] for this package only",
            export.frontend.norm_mean, export.frontend.norm_std,
        )
        extra_state["sslam_frontend"] = {"norm_mean": export.frontend.norm_mean, "norm_std": export.frontend.norm_std}
    model_cfg = model_config(export, decoder_cfg)
    task_cfg = task_config(export, flags, finetuning=False)
    student = encoder_to_official(export.encoder_state)
    task_state: Dict[str, Any] = {}
    if export.head is None:
        model: Dict[str, Any] = dict(student)
        model.update(decoder or {})
        model[TEACHER_KEY] = dict(teacher) if teacher else dict(student)
        if teacher is None and decoder is None:
            logger.info("official layout: no decoder and the student as EMA teacher (the source has neither)")
        cfg: Dict[str, Any] = {"model": model_cfg, "task": task_cfg}
    else:
        head = export.head
        if head.fc_norm and abs(head.fc_norm_eps - OFFICIAL_FC_NORM_EPS) > 1e-12:
            logger.warning(
                "fc_norm eps %g: the official fine-tuning model uses %g; logits may differ in the last digits",
                head.fc_norm_eps, OFFICIAL_FC_NORM_EPS,
            )
        # The official fine-tuning model builds the pre-training decoder from this
        # config and removes it before loading weights; EAT's recipe decoder keeps
        # the config as official fine-tuned checkpoints have it.
        if decoder_cfg is None and enc.embed_dim % 16 == 0:
            model_cfg["modalities"]["image"]["decoder"] = recipe_decoder(enc.embed_dim)
        pretrained = {"model": model_cfg, "task": task_cfg}
        cfg = {
            "model": classification_config(export, pretrained, flags),
            "task": task_config(export, flags, finetuning=True),
        }
        model = dict(finetuned_to_official(export.encoder_state, export.head_state))
        labels = export.labels or []
        task_state = {
            # what the official task reads from label_descriptors.csv: label id -> index
            "labels": {label.id: str(label.index) for label in labels},
            # this package's reader: names and the score activation
            "label_ids": [label.id for label in labels],
            "label_names": [label.name for label in labels],
            "multilabel": head.activation == "sigmoid",
        }
    # The official code sets these two to None on a loaded config, which in
    # omegaconf's struct mode only works for keys that exist.
    cfg.update({"criterion": None, "lr_scheduler": None})
    return {
        "args": None,
        "cfg": copy.deepcopy(cfg),
        "model": model,
        "criterion": None,
        # fairseq's loader reads the last entry of the history, so it must not be empty
        "optimizer_history": [
            {"criterion_name": "ModelCriterion", "optimizer_name": "none", "lr_scheduler_state": {}, "num_updates": 0}
        ],
        "task_state": task_state,
        "extra_state": extra_state,
        "last_optimizer_state": None,
    }


def save_official_checkpoint(
    export: EncoderExport,
    path: Union[str, Path],
    decoder: Optional[Mapping[str, torch.Tensor]] = None,
    teacher: Optional[Mapping[str, torch.Tensor]] = None,
) -> Path:
    """Write :func:`official_checkpoint_from_export` to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(official_checkpoint_from_export(export, decoder=decoder, teacher=teacher), tmp)
    tmp.replace(path)
    logger.info("wrote official EAT/SSLAM checkpoint %s", path)
    return path
