"""The run configs (``cfg.model``, ``cfg.task``) of a checkpoint in the official EAT / SSLAM layout.

The official code reads configs in omegaconf's struct mode, where an unknown key
is an error: these are complete configs of its dataclasses (``data2vec_multi``
and ``mae_image_pretraining`` for pre-trained models, ``mae_image_classification``
for fine-tuned ones), with exactly their key sets (``reference/golden`` and
``official_checkpoint_layout_vitb.txt``). :mod:`.official_layout` writes the
checkpoint around them.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..features import AUDIOSET_MEAN, AUDIOSET_STD
from .export_format import EncoderExport

__all__ = ["decoder_config", "recipe_decoder", "norm_flags", "model_config", "task_config", "classification_config"]


# The decoder fields of the official config that EAT's recipe never changes.
_DECODER_CONSTANTS: Dict[str, Any] = {
    "input_dropout": 0.0,
    "add_positions_masked": False,
    "add_positions_all": False,
    "decoder_residual": True,
    "projection_layers": 1,
    "projection_ratio": 2.0,
}

# front-end flags of the official task/model and the normalisation each selects
_NORM_FLAGS = {"esc50_eval": (-6.627, 5.359), "spcv2_eval": (-6.846, 5.565)}
_DECODER_BLOCK = re.compile(r"modality_encoders\.IMAGE\.decoder\.blocks\.(\d+)\.0\.(weight|bias)$")


def decoder_config(decoder: Mapping[str, torch.Tensor], embed_dim: int) -> Optional[Dict[str, Any]]:
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


def recipe_decoder(embed_dim: int) -> Dict[str, Any]:
    """EAT's pre-training decoder (6 grouped 3x3 conv blocks of the encoder's width)."""
    return {
        "decoder_dim": embed_dim,
        "decoder_groups": 16,
        "decoder_kernel": 3,
        "decoder_layers": 6,
        **_DECODER_CONSTANTS,
    }


def norm_flags(export: EncoderExport) -> Tuple[Dict[str, bool], bool]:
    """(esc50_eval / spcv2_eval flags, whether they reproduce the export's normalisation)."""
    mean, std = export.frontend.norm_mean, export.frontend.norm_std
    flags = {flag: False for flag in _NORM_FLAGS}
    for flag, (m, s) in _NORM_FLAGS.items():
        if abs(mean - m) < 1e-6 and abs(std - s) < 1e-6:
            flags[flag] = True
            return flags, True
    return flags, abs(mean - AUDIOSET_MEAN) < 1e-6 and abs(std - AUDIOSET_STD) < 1e-6


def model_config(export: EncoderExport, decoder: Optional[Dict[str, Any]]) -> Dict[str, Any]:
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


def task_config(export: EncoderExport, flags: Mapping[str, bool], finetuning: bool) -> Dict[str, Any]:
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


def classification_config(
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
