"""Checkpoint conversion: fairseq checkpoints <-> self-contained encoder exports.

An **export** is a folder that loads without fairseq (or omegaconf)::

    OUT/config.json        architecture, front end, optional head (keys below)
    OUT/model.safetensors  weights in this package's names:
                           ``encoder.*`` (an :class:`~sslam_plugin.models.AudioEncoder`),
                           ``fc_norm.*`` and ``head.*`` when there is a classifier
    OUT/labels.json        only with a head: ``[{"index", "id", "name"}, ...]``

``config.json`` keys: ``format`` (``"sslam-encoder-export"``), ``format_version``,
``encoder`` (every :class:`~sslam_plugin.models.EncoderConfig` field), ``frontend``
(``sample_rate``, ``target_length``, ``num_mel_bins``, ``frame_shift_ms``,
``frame_length_ms``, ``norm_mean``, ``norm_std``), ``head`` (``null`` or
``num_classes``, ``pooling`` ``"cls"|"mean"``, ``fc_norm``, ``fc_norm_eps``,
``activation`` ``"sigmoid"|"softmax"``), ``dtype``, ``weights``
(``"student"|"teacher"``), ``source`` (where it came from) and
``sslam_plugin_version``.

Sources understood, detected from the checkpoint's parameter names (the config's
``_name`` only labels them):

* pre-training checkpoints, official EAT/SSLAM (``data2vec_multi``) or this
  plugin's (``sslam_pretraining``): the student under official names in
  ``ckpt["model"]``, the EMA teacher in ``ckpt["model"]["_ema"]``, the decoder
  (dropped) and training-only state such as the teacher's update count (ignored);
* fine-tuned checkpoints (official ``mae_image_classification``, and this
  plugin's fine-tuning model): the encoder under ``model.`` plus ``head.*`` and
  optionally ``fc_norm.*``.

Checkpoints are read with ``torch.load(weights_only=True)``; one that needs
Python's full unpickler (which can run code stored in the file) is refused
unless the caller passes ``trust=True`` (``--trust-checkpoint``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from . import __version__
from .checkpoint_layout import (
    FINETUNED_ENCODER_PREFIX,
    TEACHER_KEY,
    TRAINING_STATE_KEYS,
    CheckpointLayoutError,
    encoder_from_official,
    encoder_to_official,
    finetuned_from_official,
    is_official_decoder_name,
    is_official_encoder_name,
)
from .config_utils import dataclass_from_dict
from .data.labels import read_label_descriptors
from .features import AUDIOSET_MEAN, AUDIOSET_STD, SAMPLE_RATE, FbankConfig
from .models.encoder import EncoderConfig

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "UntrustedCheckpointError",
    "UnknownCheckpointError",
    "PRETRAINING",
    "FINETUNED",
    "DTYPES",
    "HeadConfig",
    "Label",
    "EncoderExport",
    "load_checkpoint_file",
    "DetectedFormat",
    "detect_format",
    "infer_encoder_config",
    "infer_frontend",
    "export_from_checkpoint",
    "load_checkpoint_as_export",
    "is_export",
    "save_export",
    "load_export",
    "load_any",
    "fairseq_checkpoint_from_export",
    "save_fairseq_checkpoint",
    "read_label_csv",
]

EXPORT_FORMAT = "sslam-encoder-export"
EXPORT_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"

PRETRAINING = "pretraining"
FINETUNED = "finetuned"

DTYPES: Dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# Normalisation constants of the datasets the official fine-tuning flags name (paper.md).
_DATASET_NORMS = {
    "esc50_eval": (-6.627, 5.359),
    "spcv2_eval": (-6.846, 5.565),
}
_PROJ = "modality_encoders.IMAGE.local_encoder.proj.weight"
_KNOWN_MODEL_NAMES = {
    "data2vec_multi": "official EAT/SSLAM pre-training",
    "sslam_pretraining": "sslam-plugin pre-training",
    "mae_image_classification": "official EAT/SSLAM fine-tuned",
    "sslam_classifier": "sslam-plugin fine-tuned",
}
_MAX_LISTED_KEYS = 40


# ------------------------------------------------------------------ errors
class CheckpointError(ValueError):
    """A checkpoint or export that cannot be used; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """The file is not a readable checkpoint (truncated, corrupted, not PyTorch)."""


class UntrustedCheckpointError(CheckpointError):
    """The checkpoint needs the full unpickler and the caller did not trust it."""


class UnknownCheckpointError(CheckpointError):
    """A readable checkpoint of a model this package does not know; lists the unmatched keys."""


def _list_keys(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"


# ----------------------------------------------------------- data classes
@dataclass
class HeadConfig:
    """A classifier on the pooled encoder output: ``head(fc_norm(pool(x)))``."""

    num_classes: int
    pooling: str = "cls"  # "cls": token 0; "mean": mean of the patch tokens (CLS excluded)
    fc_norm: bool = False  # LayerNorm on the pooled feature before the head
    fc_norm_eps: float = 1e-6
    activation: str = "sigmoid"  # "sigmoid": multi-label (AudioSet); "softmax": single-label

    def validate(self) -> None:
        if self.num_classes <= 0:
            raise ValueError(f"head.num_classes must be positive, got {self.num_classes}")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"head.pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.activation not in ("sigmoid", "softmax"):
            raise ValueError(f"head.activation must be 'sigmoid' or 'softmax', got {self.activation!r}")


@dataclass
class Label:
    index: int
    id: str
    name: str


@dataclass
class EncoderExport:
    """Everything an export holds, in memory.

    ``state`` uses this package's names: ``encoder.<AudioEncoder name>`` and, with
    a head, ``fc_norm.weight``/``fc_norm.bias`` (if ``head.fc_norm``) and
    ``head.weight`` (num_classes, D) / ``head.bias`` (num_classes,).
    """

    encoder: EncoderConfig
    frontend: FbankConfig
    state: Dict[str, torch.Tensor]
    head: Optional[HeadConfig] = None
    labels: Optional[List[Label]] = None
    weights: str = "student"
    source: Dict[str, Any] = field(default_factory=dict)

    @property
    def encoder_state(self) -> Dict[str, torch.Tensor]:
        """The :class:`AudioEncoder` state dict (prefix removed)."""
        return {k[len("encoder.") :]: v for k, v in self.state.items() if k.startswith("encoder.")}

    @property
    def head_state(self) -> Dict[str, torch.Tensor]:
        return {k: v for k, v in self.state.items() if not k.startswith("encoder.")}

    @property
    def dtype(self) -> torch.dtype:
        return self.state["encoder.patch_embed.proj.weight"].dtype

    def to(self, dtype: torch.dtype) -> "EncoderExport":
        """A copy whose floating-point tensors are cast to ``dtype``."""
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.state.items()}
        return dataclasses.replace(self, state=state)


# --------------------------------------------------------- reading files
def _unsupported_global(err: Exception) -> Optional[str]:
    """The refused global of a weights-only load error, or None if it is not that error."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    if match:
        return match.group(1)
    if "Unsupported global" in str(err) or "Unsupported operand" in str(err):
        return _UNKNOWN_OBJECT
    return None


_UNKNOWN_OBJECT = "a Python object"


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch.save's format) or a pickle (the legacy format)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_checkpoint_file(path: Union[str, Path], trust: bool = False) -> Dict[str, Any]:
    """Read a fairseq/PyTorch checkpoint onto the CPU, safely unless trusted.

    ``torch.load(weights_only=True)`` (with ``argparse.Namespace`` allowed, as old
    fairseq ``args`` use it) is tried first. A checkpoint that pickles other
    Python objects (omegaconf configs, enums) needs the full unpickler, which can
    run code stored in the file: it is used only with ``trust=True``.

    Raises:
        CheckpointError: missing file.
        CorruptCheckpointError: truncated or corrupted file, or not a checkpoint.
        UntrustedCheckpointError: needs the full unpickler and ``trust`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    size = path.stat().st_size
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _unsupported_global(err)
        if refused is None or (refused == _UNKNOWN_OBJECT and not _looks_like_torch_file(path)):
            raise _corrupt(path, size, err) from err
    except Exception as err:  # truncated zip, wrong magic number, EOF, ...
        raise _corrupt(path, size, err) from err
    if not trust:
        raise UntrustedCheckpointError(
            f"{path}: the checkpoint stores Python objects ({refused}) that PyTorch's safe loader "
            "(torch.load(weights_only=True)) refuses. Loading it with the full unpickler can run code "
            "stored in the file. If you trust where it came from, pass --trust-checkpoint "
            "(Python: trust=True); otherwise ask its author for a weights-only checkpoint or an export."
        )
    logger.warning("%s: loading with the full unpickler (trusted by the caller) because of %s", path, refused)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise _corrupt(path, size, err) from err


def _corrupt(path: Path, size: int, err: Exception) -> CorruptCheckpointError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CorruptCheckpointError(
        f"{path}: cannot read this file as a PyTorch checkpoint ({size} bytes): {reason}. "
        "The file is probably truncated or corrupted (an interrupted download or copy?); "
        "download or copy it again."
    )


def _plain(cfg: Any) -> Any:
    """A checkpoint's cfg as plain dicts (omegaconf containers are converted)."""
    if cfg is None or isinstance(cfg, (dict, list, str, int, float, bool)):
        return cfg
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # only reachable when omegaconf unpickled the cfg

        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if isinstance(cfg, argparse.Namespace):
        return vars(cfg)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    return cfg


def _get(cfg: Any, *path: str) -> Any:
    """``cfg[path[0]][path[1]]...`` or None where any level is missing."""
    node = cfg
    for key in path:
        node = _plain(node)
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return _plain(node)


def _first(cfg: Any, *paths: Tuple[str, ...]) -> Any:
    for path in paths:
        value = _get(cfg, *path)
        if value is not None:
            return value
    return None


# -------------------------------------------------------- format detection
@dataclass
class DetectedFormat:
    kind: str  # PRETRAINING or FINETUNED
    description: str  # for messages and the export's "source"
    model_name: Optional[str]


def detect_format(ckpt: Any, source: str = "checkpoint") -> DetectedFormat:
    """Recognise a checkpoint from its parameter names.

    Raises:
        UnknownCheckpointError: no known encoder layout; the message lists the keys.
    """
    if not isinstance(ckpt, Mapping):
        raise UnknownCheckpointError(
            f"{source}: expected a fairseq checkpoint (a dict with 'model' and 'cfg'), got {type(ckpt).__name__}"
        )
    model = ckpt.get("model")
    if not isinstance(model, Mapping):
        raise UnknownCheckpointError(
            f"{source}: not a fairseq checkpoint of this encoder: no 'model' state dict; "
            f"top-level keys: {_list_keys([str(k) for k in ckpt])}"
        )
    name = _get(ckpt.get("cfg"), "model", "_name") or _get(ckpt.get("args"), "arch")
    if _PROJ in model:
        kind = PRETRAINING
    elif FINETUNED_ENCODER_PREFIX + _PROJ in model:
        kind = FINETUNED
    else:
        raise UnknownCheckpointError(
            f"{source}: not an EAT/SSLAM checkpoint (model {name!r}): none of its parameters matched "
            f"'{_PROJ}' (pre-training) or '{FINETUNED_ENCODER_PREFIX}{_PROJ}' (fine-tuned). "
            f"Unmatched keys: {_list_keys([str(k) for k in model])}"
        )
    default = "pre-training" if kind == PRETRAINING else "fine-tuned"
    description = _KNOWN_MODEL_NAMES.get(str(name), f"{default} checkpoint (model {name!r})")
    if name is not None and name not in _KNOWN_MODEL_NAMES:
        logger.info("%s: unfamiliar model name %r; reading it as a %s layout", source, name, default)
    return DetectedFormat(kind, description, name)


def _split_pretraining(
    model: Mapping[str, Any], teacher: bool, source: str
) -> Dict[str, torch.Tensor]:
    """Student (or teacher) encoder state in our names from a pre-training state dict."""
    unmatched = [
        k
        for k in model
        if k != TEACHER_KEY and k not in TRAINING_STATE_KEYS
        and not is_official_encoder_name(k)
        and not is_official_decoder_name(k)
    ]
    if unmatched:
        raise UnknownCheckpointError(
            f"{source}: looks like an EAT/SSLAM pre-training checkpoint, but these keys matched "
            f"no known parameter: {_list_keys(unmatched)}"
        )
    if teacher:
        ema = model.get(TEACHER_KEY)
        if not isinstance(ema, Mapping):
            raise CheckpointError(
                f"{source}: no EMA teacher in this checkpoint (no model['{TEACHER_KEY}']); export the student instead"
            )
        bad = [k for k in ema if not is_official_encoder_name(k) and not is_official_decoder_name(k)]
        if bad:
            raise UnknownCheckpointError(
                f"{source}: the EMA teacher holds keys that matched no known parameter: {_list_keys(bad)}"
            )
        official = {k: v for k, v in ema.items() if is_official_encoder_name(k)}
    else:
        official = {k: v for k, v in model.items() if is_official_encoder_name(k)}
    return encoder_from_official(official)


# ------------------------------------------------------ configuration
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
    model_cfg = _first(cfg, ("model", "encoder"))  # this plugin
    legacy_cfgs = [_get(cfg, "model"), _get(cfg, "model", "pretrained_model_args", "model")]  # official

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
    num_mel_bins = int(_first(cfg, ("model", "encoder", "num_mel_bins"), ("task", "num_mel_bins")) or 128)
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
    target_length = _first(
        cfg,
        ("task", "target_length"),
        ("model", "target_length"),
        ("model", "modalities", "image", "target_length"),
    )
    mean, std = _first(cfg, ("task", "norm_mean")), _first(cfg, ("task", "norm_std"))
    if mean is None or std is None:
        mean, std = AUDIOSET_MEAN, AUDIOSET_STD
        for flag, norms in _DATASET_NORMS.items():
            if _first(cfg, ("task", flag), ("model", flag)):
                mean, std = norms
    values: Dict[str, Any] = dict(
        target_length=int(target_length or 1024),
        num_mel_bins=encoder.num_mel_bins,
        norm_mean=float(mean),
        norm_std=float(std),
    )
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    frontend = FbankConfig(**values)
    _check_frontend(frontend, encoder)
    return frontend


def _check_frontend(frontend: FbankConfig, encoder: EncoderConfig) -> None:
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


def _head_config(
    ckpt: Mapping[str, Any], head_state: Mapping[str, torch.Tensor], activation: Optional[str], source: str
) -> HeadConfig:
    if "head.weight" not in head_state or "head.bias" not in head_state:
        raise UnknownCheckpointError(f"{source}: fine-tuned layout without 'head.weight'/'head.bias'")
    cfg = ckpt.get("cfg")
    mode = str(_first(cfg, ("model", "prediction_mode")) or "CLS_TOKEN").rsplit(".", 1)[-1].upper()
    pooling = {"CLS_TOKEN": "cls", "MEAN_POOLING": "mean"}.get(mode)
    if pooling is None:
        raise CheckpointError(
            f"{source}: prediction_mode {mode} is not supported (CLS_TOKEN or MEAN_POOLING are)"
        )
    if activation is None:
        activation = _stated_activation(ckpt)
    return HeadConfig(
        num_classes=int(head_state["head.weight"].shape[0]),
        pooling=pooling,
        fc_norm="fc_norm.weight" in head_state,
        activation=activation,
    )


def _stated_activation(ckpt: Mapping[str, Any]) -> str:
    """sigmoid for multi-label heads (AudioSet), softmax for single-label ones."""
    cfg = ckpt.get("cfg")
    task_state = ckpt.get("task_state") or {}
    multilabel = task_state.get("multilabel") if isinstance(task_state, Mapping) else None
    if multilabel is None:
        multilabel = _first(cfg, ("model", "multilabel"), ("task", "multilabel"))
    if multilabel is None and _get(cfg, "model", "audio_mae") is not None:
        # official: AudioSet fine-tunes are multi-label; ESC-50, SPC-2 and images single-label
        official = _get(cfg, "model")
        multilabel = bool(official.get("audio_mae")) and not (
            official.get("esc50_eval") or official.get("spcv2_eval")
        )
    if multilabel is None:
        logger.info("the checkpoint does not say whether its head is multi-label; assuming it is (sigmoid scores)")
        multilabel = True
    return "sigmoid" if multilabel else "softmax"


def read_label_csv(path: Union[str, Path]) -> List[Label]:
    """``index,label_id,display_name`` lines (also AudioSet's ``class_labels_indices.csv``)."""
    try:
        labels = read_label_descriptors(path)
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(str(err)) from err
    return [Label(i, label_id, name) for i, (label_id, name) in enumerate(zip(labels.ids, labels.names))]


def _labels(
    ckpt: Mapping[str, Any], num_classes: int, labels_csv: Optional[Union[str, Path]], source: str
) -> List[Label]:
    if labels_csv is not None:
        labels = read_label_csv(labels_csv)
        origin = str(labels_csv)
    else:
        task_state = ckpt.get("task_state") or {}
        ids = task_state.get("label_ids") if isinstance(task_state, Mapping) else None
        names = task_state.get("label_names") if isinstance(task_state, Mapping) else None
        if ids is None:
            logger.info("%s: no label names stored; using class_0..class_%d (pass --labels CSV)", source, num_classes - 1)
            return [Label(i, f"class_{i}", f"class_{i}") for i in range(num_classes)]
        ids = [str(i) for i in ids]
        names = [str(n) for n in names] if names is not None else list(ids)
        if len(names) != len(ids):
            raise CheckpointError(f"{source}: task_state has {len(ids)} label_ids but {len(names)} label_names")
        labels = [Label(i, a, b) for i, (a, b) in enumerate(zip(ids, names))]
        origin = "task_state"
    if len(labels) != num_classes:
        raise CheckpointError(f"{source}: {origin} lists {len(labels)} labels but the head has {num_classes} classes")
    return labels


# ------------------------------------------------------------ conversion
def export_from_checkpoint(
    ckpt: Mapping[str, Any],
    source: str = "checkpoint",
    teacher: bool = False,
    num_heads: Optional[int] = None,
    labels_csv: Optional[Union[str, Path]] = None,
    activation: Optional[str] = None,
    frontend_overrides: Optional[Mapping[str, Any]] = None,
) -> EncoderExport:
    """Turn a loaded fairseq checkpoint dict into an :class:`EncoderExport`.

    Args:
        ckpt: the dict ``torch.load`` returned.
        source: the file name, for messages.
        teacher: export the EMA teacher (pre-training checkpoints only).
        num_heads: attention heads when the checkpoint's config does not say.
        labels_csv: label names for a head without stored labels.
        activation: "sigmoid" or "softmax" for the head, overriding what the checkpoint says.
        frontend_overrides: FbankConfig fields to set (target_length, norm_mean, norm_std).

    Raises:
        UnknownCheckpointError, CheckpointError: with the file and the offending keys.
    """
    fmt = detect_format(ckpt, source)
    model = ckpt["model"]
    try:
        if fmt.kind == PRETRAINING:
            encoder_state = _split_pretraining(model, teacher, source)
            head_state: Dict[str, torch.Tensor] = {}
        else:
            if teacher:
                raise CheckpointError(f"{source}: a fine-tuned checkpoint has no EMA teacher; drop --teacher")
            encoder_state, head_state = finetuned_from_official(model)
    except CheckpointLayoutError as err:
        raise UnknownCheckpointError(f"{source}: {err}") from err
    bad = [k for k, v in list(encoder_state.items()) + list(head_state.items()) if not isinstance(v, torch.Tensor)]
    if bad:
        raise UnknownCheckpointError(f"{source}: these entries are not tensors: {_list_keys(bad)}")
    cfg = ckpt.get("cfg") if ckpt.get("cfg") is not None else ckpt.get("args")
    encoder = infer_encoder_config(encoder_state, cfg, num_heads, source)
    frontend = infer_frontend(cfg, encoder, frontend_overrides)
    head = labels = None
    if head_state:
        head = _head_config(ckpt, head_state, activation, source)
        labels = _labels(ckpt, head.num_classes, labels_csv, source)
    state = {"encoder." + k: v for k, v in encoder_state.items()}
    state.update(head_state)
    info: Dict[str, Any] = {"file": Path(source).name, "format": fmt.description, "model_name": fmt.model_name}
    history = ckpt.get("optimizer_history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        info["num_updates"] = history[-1].get("num_updates")
    export = EncoderExport(
        encoder=encoder,
        frontend=frontend,
        state=state,
        head=head,
        labels=labels,
        weights="teacher" if teacher else "student",
        source=info,
    )
    _check_state(export, source)
    return export


def load_checkpoint_as_export(
    path: Union[str, Path], trust: bool = False, **kwargs: Any
) -> EncoderExport:
    """:func:`load_checkpoint_file` then :func:`export_from_checkpoint` (kwargs go there)."""
    ckpt = load_checkpoint_file(path, trust=trust)
    return export_from_checkpoint(ckpt, source=str(path), **kwargs)


def _expected_shapes(export: EncoderExport) -> Dict[str, Tuple[int, ...]]:
    from .models.encoder import AudioEncoder

    # a one-block encoder is cheap to build; its block-0 shapes stand for every block
    one_block = AudioEncoder(dataclasses.replace(export.encoder, depth=1)).state_dict()
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name, value in one_block.items():
        if name.startswith("blocks.0."):
            for i in range(export.encoder.depth):
                shapes[f"encoder.blocks.{i}.{name[len('blocks.0.'):]}"] = tuple(value.shape)
        else:
            shapes["encoder." + name] = tuple(value.shape)
    if export.head is not None:
        d, c = export.encoder.embed_dim, export.head.num_classes
        shapes.update({"head.weight": (c, d), "head.bias": (c,)})
        if export.head.fc_norm:
            shapes.update({"fc_norm.weight": (d,), "fc_norm.bias": (d,)})
    return shapes


def _check_state(export: EncoderExport, source: str) -> None:
    """Every tensor the architecture needs is there with its shape, and nothing else."""
    expected = _expected_shapes(export)
    missing = sorted(set(expected) - set(export.state))
    unexpected = sorted(set(export.state) - set(expected))
    wrong = sorted(
        f"{k}: {tuple(export.state[k].shape)} instead of {shape}"
        for k, shape in expected.items()
        if k in export.state and tuple(export.state[k].shape) != shape
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source}: weights do not fit the architecture {dataclasses.asdict(export.encoder)}: "
            f"missing {_list_keys(missing)}, unexpected {_list_keys(unexpected)}, wrong shapes {wrong}"
        )


# ---------------------------------------------------------------- exports
def _export_dir(path: Union[str, Path]) -> Path:
    path = Path(path)
    return path.parent if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE) else path


def is_export(path: Union[str, Path]) -> bool:
    """Whether ``path`` is an export folder (or its config.json / model.safetensors)."""
    return (_export_dir(path) / CONFIG_FILE).is_file()


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("exports need the 'safetensors' package: pip install safetensors") from err
    return st


def save_export(export: EncoderExport, out_dir: Union[str, Path], dtype: Optional[str] = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (with a head) ``labels.json`` into ``out_dir``.

    Args:
        dtype: "float32", "float16" or "bfloat16"; None keeps the tensors' dtype.

    Returns:
        The folder.
    """
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        export = export.to(DTYPES[dtype])
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder; an export is a folder")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in export.state.items()}
    weights_path = out / WEIGHTS_FILE
    _safetensors().save_file(state, str(weights_path), metadata={"format": "pt", "producer": EXPORT_FORMAT})
    _chmod_like_umask(weights_path)
    config = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "encoder": dataclasses.asdict(export.encoder),
        "frontend": {"sample_rate": SAMPLE_RATE, **dataclasses.asdict(export.frontend)},
        "head": dataclasses.asdict(export.head) if export.head is not None else None,
        "dtype": str(export.dtype).replace("torch.", ""),
        "weights": export.weights,
        "source": export.source,
        "sslam_plugin_version": __version__,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    labels_path = out / LABELS_FILE
    if export.labels is not None:
        labels_path.write_text(
            json.dumps([dataclasses.asdict(label) for label in export.labels], indent=1, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    elif labels_path.exists():
        labels_path.unlink()  # a stale list from an earlier export into the same folder
    logger.info("wrote %s (%d tensors, %s)", out, len(state), config["dtype"])
    return out


def _chmod_like_umask(path: Path) -> None:
    """Give a file the permissions a plain ``open()`` would (safetensors writes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_export(path: Union[str, Path]) -> EncoderExport:
    """Read an export folder written by :func:`save_export` (no fairseq needed)."""
    folder = _export_dir(path)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: not an export folder (no {CONFIG_FILE})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CorruptCheckpointError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{config_path}: not an {EXPORT_FORMAT} config (format={config.get('format')!r})")
    if int(config.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format_version {config['format_version']} is newer than this sslam_plugin reads "
            f"({EXPORT_FORMAT_VERSION}); upgrade sslam_plugin"
        )
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
    try:
        state = _safetensors().load_file(str(weights_path))
    except Exception as err:
        raise _corrupt(weights_path, weights_path.stat().st_size, err) from err
    frontend_cfg = {k: v for k, v in config["frontend"].items() if k != "sample_rate"}
    encoder = dataclass_from_dict(EncoderConfig, config["encoder"])
    head = dataclass_from_dict(HeadConfig, config["head"]) if config.get("head") else None
    labels = None
    if head is not None:
        head.validate()
        labels_path = folder / LABELS_FILE
        if labels_path.is_file():
            labels = [Label(int(x["index"]), str(x["id"]), str(x["name"])) for x in json.loads(labels_path.read_text())]
        else:
            labels = [Label(i, f"class_{i}", f"class_{i}") for i in range(head.num_classes)]
    export = EncoderExport(
        encoder=encoder,
        frontend=dataclass_from_dict(FbankConfig, frontend_cfg),
        state=state,
        head=head,
        labels=labels,
        weights=config.get("weights", "student"),
        source=config.get("source", {}),
    )
    _check_state(export, str(weights_path))
    return export


def load_any(
    path: Union[str, Path],
    trust: bool = False,
    teacher: bool = False,
    **kwargs: Any,
) -> EncoderExport:
    """An export folder or a fairseq checkpoint, as an :class:`EncoderExport`."""
    if is_export(path):
        if teacher:
            raise CheckpointError(f"{path}: an export holds one set of weights; --teacher applies to checkpoints")
        return load_export(path)
    return load_checkpoint_as_export(path, trust=trust, teacher=teacher, **kwargs)


# ------------------------------------------------- export -> fairseq checkpoint
def fairseq_checkpoint_from_export(export: EncoderExport) -> Dict[str, Any]:
    """A pre-training-style fairseq checkpoint holding the export's encoder.

    Fine-tuning reads it as ``model.model_path``: the student under official
    names in ``model``, the same weights as the EMA teacher in ``model["_ema"]``,
    the architecture in ``cfg.model.encoder`` and the front end in ``cfg.task``.
    It has no decoder, so pre-training cannot resume from it. A classifier head
    is not carried over (this layout has no place for it). Everything in it
    loads with ``torch.load(weights_only=True)``.
    """
    if export.head is not None:
        logger.warning("the classification head is not written: a pre-training checkpoint has no place for it")
    student = encoder_to_official(export.encoder_state)
    model: Dict[str, Any] = dict(student)
    model[TEACHER_KEY] = dict(student)
    task = {
        "_name": "sslam_pretraining",
        "target_length": export.frontend.target_length,
        "num_mel_bins": export.frontend.num_mel_bins,
        "norm_mean": export.frontend.norm_mean,
        "norm_std": export.frontend.norm_std,
    }
    return {
        "cfg": {
            "model": {"_name": "sslam_pretraining", "encoder": dataclasses.asdict(export.encoder)},
            "task": task,
        },
        "model": model,
        "args": None,
        "criterion": None,
        # fairseq's loader reads the last entry of the history, so it must not be empty
        "optimizer_history": [
            {"criterion_name": "ModelCriterion", "optimizer_name": "none", "lr_scheduler_state": {}, "num_updates": 0}
        ],
        "task_state": {},
        "extra_state": {"converted_from": export.source, "weights": export.weights},
        "last_optimizer_state": None,
    }


def save_fairseq_checkpoint(export: EncoderExport, path: Union[str, Path]) -> Path:
    """Write :func:`fairseq_checkpoint_from_export` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(fairseq_checkpoint_from_export(export), tmp)
    tmp.replace(path)
    logger.info("wrote fairseq checkpoint %s", path)
    return path
