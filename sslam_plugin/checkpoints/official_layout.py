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
is an error: only the fields its dataclasses declare are written. What has no
field there (a normalisation other than AudioSet / ESC-50 / SPC-2, label
names) goes to ``extra_state`` / ``task_state``, which this package reads back.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ..features import AUDIOSET_MEAN, AUDIOSET_STD
from .errors import CheckpointError
from .export_format import EncoderExport
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


# The decoder fields of the official config that EAT's recipe never changes.
_DECODER_CONSTANTS: Dict[str, Any] = {
    "input_dropout": 0.0,
    "add_positions_masked": False,
    "add_positions_all": False,
    "decoder_residual": True,
    "projection_layers": 1,
    "projection_ratio": 2.0,
}

# the official fine-tuning model's fc_norm: nn.LayerNorm(embed_dim, eps=1e-6)
OFFICIAL_FC_NORM_EPS = 1e-6
# front-end flags of the official task/model and the normalisation each selects
_NORM_FLAGS = {"esc50_eval": (-6.627, 5.359), "spcv2_eval": (-6.846, 5.565)}
_DECODER_BLOCK = re.compile(r"modality_encoders\.IMAGE\.decoder\.blocks\.(\d+)\.0\.(weight|bias)$")


# ------------------------------------------------------------------ configs
def _decoder_config(decoder: Mapping[str, torch.Tensor], embed_dim: int) -> Optional[Dict[str, Any]]:
    """The official ``D2vDecoderConfig`` of a decoder state (official names), from its shapes."""
    layers = sorted({int(m.group(1)) for k in decoder if (m := _DECODER_BLOCK.match(k))})
    prefix = "modality_encoders.IMAGE.decoder."
    expected = {f"{prefix}blocks.{i}.0.{p}" for i in layers for p in ("weight", "bias")}
    expected |= {prefix + "proj.weight", prefix + "proj.bias"}
    if not layers or layers != list(range(len(layers))) or set(decoder) != expected:
        return None
    conv = decoder[f"{prefix}blocks.0.0.weight"]  # (dim, embed_dim / groups, k, k)
    return {
        "decoder_dim": int(conv.shape[0]),
        "decoder_groups": embed_dim // int(conv.shape[1]),
        "decoder_kernel": int(conv.shape[2]),
        "decoder_layers": len(layers),
        **_DECODER_CONSTANTS,
    }


def _recipe_decoder(embed_dim: int) -> Dict[str, Any]:
    """EAT's pre-training decoder (6 grouped 3x3 conv blocks of the encoder's width)."""
    return {
        "decoder_dim": embed_dim,
        "decoder_groups": 16,
        "decoder_kernel": 3,
        "decoder_layers": 6,
        **_DECODER_CONSTANTS,
    }


def _norm_flags(export: EncoderExport) -> Tuple[Dict[str, bool], bool]:
    """(esc50_eval / spcv2_eval flags, whether they reproduce the export's normalisation)."""
    mean, std = export.frontend.norm_mean, export.frontend.norm_std
    flags = {flag: False for flag in _NORM_FLAGS}
    for flag, (m, s) in _NORM_FLAGS.items():
        if abs(mean - m) < 1e-6 and abs(std - s) < 1e-6:
            flags[flag] = True
            return flags, True
    return flags, abs(mean - AUDIOSET_MEAN) < 1e-6 and abs(std - AUDIOSET_STD) < 1e-6


def _model_config(export: EncoderExport, decoder: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``data2vec_multi`` config: the architecture, and EAT's pre-training recipe for the rest."""
    enc = export.encoder
    image = {
        "type": "IMAGE",
        "prenet_depth": 0,
        "prenet_layerdrop": 0.0,
        "prenet_dropout": 0.0,
        "start_drop_path_rate": 0.0,
        "end_drop_path_rate": 0.0,
        "num_extra_tokens": 1,
        "init_extra_token_zero": False,
        "mask_noise_std": 0.01,
        "mask_prob_min": None,
        "mask_prob": 0.8,
        "inverse_mask": True,
        "mask_prob_adjust": 0.07,
        "keep_masked_pct": 0.0,
        "mask_length": 5,
        "add_masks": False,
        "remove_masks": False,
        "mask_dropout": 0.0,
        "encoder_zero_mask": True,
        "mask_channel_prob": 0.0,
        "mask_channel_length": 64,
        "ema_local_encoder": True,
        "local_grad_mult": 1.0,
        "use_alibi_encoder": False,
        "alibi_scale": 1.0,
        "learned_alibi": False,
        "alibi_max_pos": None,
        "learned_alibi_scale": False,
        "learned_alibi_scale_per_head": False,
        "learned_alibi_scale_per_layer": False,
        "num_alibi_heads": enc.num_heads,
        "model_depth": enc.depth,
        "decoder": decoder,
        "input_size": 224,
        "in_chans": 1,
        "patch_size": enc.patch_size,
        "embed_dim": enc.embed_dim,
        "alibi_dims": 2,
        "alibi_distance": "manhattan",
        "fixed_positions": True,
        "transformer_decoder": False,
        "enc_dec_transformer": False,
        "target_length": export.frontend.target_length,
        "max_length": enc.max_time_patches,
    }
    return {
        "_name": "data2vec_multi",
        "loss_beta": 0.0,
        "loss_scale": None,
        "depth": enc.depth,
        "start_drop_path_rate": enc.start_drop_path,
        "end_drop_path_rate": enc.end_drop_path,
        "num_heads": enc.num_heads,
        "norm_eps": enc.norm_eps,
        "norm_affine": True,
        "encoder_dropout": enc.dropout,
        "post_mlp_drop": enc.post_mlp_dropout,
        "attention_dropout": enc.attention_dropout,
        "activation_dropout": enc.activation_dropout,
        "dropout_input": 0.0,
        "layerdrop": 0.0,
        "embed_dim": enc.embed_dim,
        "mlp_ratio": enc.mlp_ratio,
        "layer_norm_first": False,
        "average_top_k_layers": enc.depth,
        "end_of_block_targets": enc.end_of_block_targets,
        "clone_batch": 16,
        "layer_norm_target_layer": False,
        "batch_norm_target_layer": False,
        "instance_norm_target_layer": True,
        "instance_norm_targets": False,
        "layer_norm_targets": True,
        "ema_decay": 0.9998,
        "ema_same_dtype": True,
        "log_norms": True,
        "ema_end_decay": 0.99999,
        "ema_anneal_end_step": 100000,
        "ema_encoder_only": False,
        "max_update": 400000,
        "modalities": {"_name": None, "image": image},
        "shared_decoder": None,
        "min_target_var": 0.0,
        "min_pred_var": 0.0,
        "supported_modality": "IMAGE",
        "mae_init": False,
        "seed": 1,
        "skip_ema": False,
        "cls_loss": 1.0,
        "recon_loss": 0.0,
        "d2v_loss": 1.0,
        "decoder_group": False,
        "utterance_level": False,
        "init_center_token_zero": False,
        "center_exp": 0.9,
        "softmax_temperature_student": 0.1,
        "softmax_temperature_teacher": 0.05,
    }


def _task_config(export: EncoderExport, flags: Mapping[str, bool], finetuning: bool) -> Dict[str, Any]:
    """``mae_image_pretraining`` (or, fine-tuned, ``mae_image_classification``) task config."""
    task = {
        "_name": "mae_image_classification" if finetuning else "mae_image_pretraining",
        "data": "",  # the official code sets it from its own task.data before use
        "multi_data": None,
        "input_size": 224,
        "local_cache_path": None,
        "key": "source",
        "beit_transforms": False,
        "target_transform": False,
        "no_transform": False,
        "rebuild_batches": True,
        "precompute_mask_config": {
            "patch_size": export.encoder.patch_size,
            "mask_prob": 0.8,
            "mask_prob_adjust": 0.07,
            "mask_length": 5,
            "inverse_mask": True,
            "mask_dropout": 0.0,
            "clone_batch": 16,
            "expand_adjacent": False,
            "non_overlapping": False,
        },
        "subsample": 1.0,
        "seed": 1,
        "dataset_type": "imagefolder",
        "audio_mae": True,
        "h5_format": False,
        "downsr_16hz": True,
        "target_length": export.frontend.target_length,
        "flexible_mask": False,
        "esc50_eval": bool(flags["esc50_eval"]),
        "spcv2_eval": bool(flags["spcv2_eval"]),
        "AS2M_finetune": False,
        "spcv1_finetune": False,
        "roll_aug": False,
        "noise": False,
        "weights_file": "",
        "num_samples": 200000,
        "is_finetuning": finetuning,
    }
    if finetuning:
        task.update({"label_descriptors": "label_descriptors.csv", "labels": "lbl"})
    return task


def _classification_config(
    export: EncoderExport, pretrained: Dict[str, Any], flags: Mapping[str, bool]
) -> Dict[str, Any]:
    """``mae_image_classification`` model config (the official fine-tuning model's fields)."""
    head = export.head
    assert head is not None
    multilabel = head.activation == "sigmoid"
    # the official model picks its loss and metric from these flags: multi-label
    # only for audio_mae without esc50_eval / spcv2_eval
    audio_mae = multilabel or any(flags.values())
    return {
        "_name": "mae_image_classification",
        "model_path": str(export.source.get("file") or "converted"),
        "no_pretrained_weights": False,
        "linear_classifier": False,
        "num_classes": head.num_classes,
        "mixup": 0.0,
        "cutmix": 0.0,
        "label_smoothing": 0.0,
        "drop_path_rate": 0.1,
        "layer_decay": 0.65,
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.0,
        "mixup_mode": "batch",
        "pretrained_model_args": pretrained,
        "data": "",
        "norm_eps": None,
        "remove_alibi": False,
        "encoder_dropout": 0.0,
        "post_mlp_drop": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "dropout_input": 0.0,
        "layerdrop": 0.0,
        "prenet_layerdrop": 0.0,
        "prenet_dropout": 0.0,
        "use_fc_norm": head.fc_norm,
        "prediction_mode": "CLS_TOKEN" if head.pooling == "cls" else "MEAN_POOLING",
        "no_decay_blocks": True,
        "audio_mae": audio_mae,
        "esc50_eval": bool(flags["esc50_eval"]) and not multilabel,
        "spcv2_eval": bool(flags["spcv2_eval"]) and not multilabel,
        "target_length": export.frontend.target_length,
        "specaug": False,
        "freqm": 25,
        "timem": 200,
        "mask_ratio": 0.0,
    }


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
        decoder_cfg = _decoder_config(decoder, enc.embed_dim)
        if decoder_cfg is None:
            logger.warning("the decoder's tensors are not the official CNN decoder's; writing the checkpoint without it")
            decoder = None
    flags, norms_carried = _norm_flags(export)
    extra_state: Dict[str, Any] = {"converted_from": export.source, "weights": export.weights}
    if not norms_carried:
        logger.warning(
            "normalisation mean %g, std %g has no flag in the official code (which knows AudioSet, ESC-50 "
            "and SPC-2); it is stored in extra_state['sslam_frontend'] for this package only",
            export.frontend.norm_mean, export.frontend.norm_std,
        )
        extra_state["sslam_frontend"] = {"norm_mean": export.frontend.norm_mean, "norm_std": export.frontend.norm_std}
    model_cfg = _model_config(export, decoder_cfg)
    task_cfg = _task_config(export, flags, finetuning=False)
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
            model_cfg["modalities"]["image"]["decoder"] = _recipe_decoder(enc.embed_dim)
        pretrained = {"model": model_cfg, "task": task_cfg}
        cfg = {
            "model": _classification_config(export, pretrained, flags),
            "task": _task_config(export, flags, finetuning=True),
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
