"""What a checkpoint's tensors and config say about the encoder and its front end.

Shapes give the width, depth, patch size, MLP ratio and positions; the config
gives what shapes cannot (heads, mel bins, normalisation, the clip length).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FbankConfig
from ..models.encoder import EncoderConfig
from .errors import CheckpointError, UnknownCheckpointError
from .files import config_value, first_config_value

__all__ = ["infer_encoder_config", "infer_frontend", "check_frontend"]

logger = logging.getLogger(__name__)

# Normalisation constants of the datasets the official fine-tuning flags name (paper.md).
_DATASET_NORMS = {
    "esc50_eval": (-6.627, 5.359),
    "spcv2_eval": (-6.846, 5.565),
}


def _block_indices(state: Mapping[str, torch.Tensor]) -> List[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})


def _require(state: Mapping[str, torch.Tensor], name: str, source: str) -> torch.Tensor:
    if name not in state:
        raise UnknownCheckpointError(f"{source}: the encoder has no '{name}' (the official name is missing)")
    return state[name]


def infer_encoder_config(
    state: Mapping[str, torch.Tensor],
    cfg: Any,
    num_heads: Optional[int] = None,
    source: str = "checkpoint",
) -> EncoderConfig:
    """The encoder's architecture from its tensors, with what shapes cannot tell from ``cfg``.

    Args:
        state: our ``AudioEncoder`` names.
        cfg: the checkpoint's ``cfg`` (may be None): heads, mel bins and eps come from it.
        num_heads: overrides the config (needed when the config does not say).
    """
    proj = _require(state, "patch_embed.proj.weight", source)  # (D, 1, P, P)
    if proj.dim() != 4 or proj.shape[1] != 1 or proj.shape[2] != proj.shape[3]:
        raise UnknownCheckpointError(
            f"{source}: patch embedding weight has shape {tuple(proj.shape)}; expected (D, 1, P, P)"
        )
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[2])
    blocks = _block_indices(state)
    if not blocks or blocks != list(range(len(blocks))):
        raise UnknownCheckpointError(f"{source}: transformer blocks are missing or not numbered 0..N-1: {blocks}")
    fc1 = _require(state, "blocks.0.mlp.fc1.weight", source)  # (hidden, D)
    model_cfg = first_config_value(cfg, ("model", "encoder"))  # this plugin
    legacy_cfgs = [config_value(cfg, "model"), config_value(cfg, "model", "pretrained_model_args", "model")]  # official

    def lookup(key: str) -> Any:
        for node in [model_cfg] + legacy_cfgs:
            if isinstance(node, Mapping) and node.get(key) is not None:
                return node[key]
        return None

    for key, actual in (("embed_dim", embed_dim), ("depth", len(blocks))):
        stated = lookup(key)
        if stated is not None and int(stated) != actual:
            logger.warning("%s: cfg says %s=%s but the weights have %s; using the weights", source, key, stated, actual)
    if num_heads is None:
        num_heads = lookup("num_heads")
    if num_heads is None:
        if embed_dim % 64:
            raise CheckpointError(
                f"{source}: the checkpoint's config does not give the number of attention heads, and "
                f"width {embed_dim} is not a multiple of 64; pass --num-heads (Python: num_heads=...)"
            )
        num_heads = embed_dim // 64
        logger.warning(
            "%s: the config does not give the number of attention heads; assuming %d (width / 64, the ViT "
            "convention). Pass --num-heads if that is wrong: the shapes cannot tell.", source, num_heads
        )
    num_mel_bins = int(first_config_value(cfg, ("model", "encoder", "num_mel_bins"), ("task", "num_mel_bins")) or 128)
    positions = _require(state, "pos_embed", source)  # (1, rows * freq_patches, D)
    freq_patches = num_mel_bins // patch
    if freq_patches == 0 or positions.shape[1] % freq_patches:
        raise UnknownCheckpointError(
            f"{source}: {positions.shape[1]} positions do not fill rows of {freq_patches} frequency patches "
            f"({num_mel_bins} mel bins / patch {patch})"
        )
    eps = lookup("norm_eps")
    encoder = EncoderConfig(
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=int(num_heads),
        mlp_ratio=float(fc1.shape[0]) / embed_dim,
        patch_size=patch,
        num_mel_bins=num_mel_bins,
        max_time_patches=int(positions.shape[1]) // freq_patches,
        norm_eps=float(eps) if eps is not None else 1e-6,
    )
    try:
        encoder.validate()
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err
    return encoder


def infer_frontend(cfg: Any, encoder: EncoderConfig, overrides: Optional[Mapping[str, Any]] = None) -> FbankConfig:
    """Front-end settings from the checkpoint's task/model config (AudioSet defaults otherwise)."""
    target_length = first_config_value(
        cfg,
        ("task", "target_length"),
        ("model", "target_length"),
        ("model", "modalities", "image", "target_length"),
    )
    mean, std = first_config_value(cfg, ("task", "norm_mean")), first_config_value(cfg, ("task", "norm_std"))
    if mean is None or std is None:
        mean, std = AUDIOSET_MEAN, AUDIOSET_STD
        for flag, norms in _DATASET_NORMS.items():
            if first_config_value(cfg, ("task", flag), ("model", flag)):
                mean, std = norms
    values: Dict[str, Any] = dict(
        target_length=int(target_length or 1024),
        num_mel_bins=encoder.num_mel_bins,
        norm_mean=float(mean),
        norm_std=float(std),
    )
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    frontend = FbankConfig(**values)
    check_frontend(frontend, encoder)
    return frontend


def check_frontend(frontend: FbankConfig, encoder: EncoderConfig) -> None:
    """The front end's mel bins and clip length fit the encoder."""
    if frontend.num_mel_bins != encoder.num_mel_bins:
        raise CheckpointError(
            f"front end gives {frontend.num_mel_bins} mel bins but the encoder expects {encoder.num_mel_bins}"
        )
    if frontend.target_length % encoder.patch_size:
        raise CheckpointError(
            f"target_length {frontend.target_length} is not a multiple of the patch size {encoder.patch_size}"
        )
    if frontend.target_length // encoder.patch_size > encoder.max_time_patches:
        raise CheckpointError(
            f"target_length {frontend.target_length} needs more than the encoder's "
            f"{encoder.max_time_patches} patch rows"
        )
