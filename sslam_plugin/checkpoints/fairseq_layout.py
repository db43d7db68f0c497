"""fairseq checkpoints, official EAT/SSLAM or this plugin's, in both directions.

Read (:func:`export_from_checkpoint`), detected from the parameter names (the
config's ``_name`` only labels them):

* pre-training checkpoints, official EAT/SSLAM (``data2vec_multi``) or this
  plugin's (``sslam_pretraining``): the student under official names in
  ``ckpt["model"]``, the EMA teacher in ``ckpt["model"]["_ema"]``, the decoder
  (dropped) and training-only state such as the teacher's update count (ignored);
* fine-tuned checkpoints (official ``mae_image_classification``, and this
  plugin's fine-tuning model): the encoder under ``model.`` plus ``head.*`` and
  optionally ``fc_norm.*``.

Written (:func:`fairseq_checkpoint_from_export`): a pre-training-style
checkpoint that fine-tuning reads as ``model.model_path``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from ..vocabulary import parse_pooling
from .architecture import infer_encoder_config, infer_frontend
from .errors import CheckpointError, UnknownCheckpointError, list_keys
from ..data.labels import placeholder_labels
from .export_format import EncoderExport, HeadConfig, Label, check_state, read_label_csv
from .files import config_value, first_config_value, load_checkpoint_file
from .official_names import (
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

__all__ = [
    "PRETRAINING",
    "FINETUNED",
    "DetectedFormat",
    "detect_format",
    "export_from_checkpoint",
    "load_checkpoint_as_export",
    "fairseq_checkpoint_from_export",
    "save_fairseq_checkpoint",
]

logger = logging.getLogger(__name__)

PRETRAINING = "pretraining"
FINETUNED = "finetuned"

_PROJ = "modality_encoders.IMAGE.local_encoder.proj.weight"
_KNOWN_MODEL_NAMES = {
    "data2vec_multi": "official EAT/SSLAM pre-training",
    "sslam_pretraining": "sslam-plugin pre-training",
    "mae_image_classification": "official EAT/SSLAM fine-tuned",
    "sslam_classifier": "sslam-plugin fine-tuned",
}


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
            f"top-level keys: {list_keys([str(k) for k in ckpt])}"
        )
    name = config_value(ckpt.get("cfg"), "model", "_name") or config_value(ckpt.get("args"), "arch")
    if _PROJ in model:
        kind = PRETRAINING
    elif FINETUNED_ENCODER_PREFIX + _PROJ in model:
        kind = FINETUNED
    else:
        raise UnknownCheckpointError(
            f"{source}: not an EAT/SSLAM checkpoint (model {name!r}): none of its parameters matched "
            f"'{_PROJ}' (pre-training) or '{FINETUNED_ENCODER_PREFIX}{_PROJ}' (fine-tuned). "
            f"Unmatched keys: {list_keys([str(k) for k in model])}"
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
            f"no known parameter: {list_keys(unmatched)}"
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
                f"{source}: the EMA teacher holds keys that matched no known parameter: {list_keys(bad)}"
            )
        official = {k: v for k, v in ema.items() if is_official_encoder_name(k)}
    else:
        official = {k: v for k, v in model.items() if is_official_encoder_name(k)}
    return encoder_from_official(official)


def _head_config(
    ckpt: Mapping[str, Any], head_state: Mapping[str, torch.Tensor], activation: Optional[str], source: str
) -> HeadConfig:
    if "head.weight" not in head_state or "head.bias" not in head_state:
        raise UnknownCheckpointError(f"{source}: fine-tuned layout without 'head.weight'/'head.bias'")
    cfg = ckpt.get("cfg")
    stated = first_config_value(cfg, ("model", "pooling"), ("model", "prediction_mode")) or "cls"
    try:
        pooling = parse_pooling(stated, "model.pooling")
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err
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
        multilabel = first_config_value(cfg, ("model", "multilabel"), ("task", "multilabel"))
    if multilabel is None and config_value(cfg, "model", "audio_mae") is not None:
        # official: AudioSet fine-tunes are multi-label; ESC-50, SPC-2 and images single-label
        official = config_value(cfg, "model")
        multilabel = bool(official.get("audio_mae")) and not (
            official.get("esc50_eval") or official.get("spcv2_eval")
        )
    if multilabel is None:
        logger.info("the checkpoint does not say whether its head is multi-label; assuming it is (sigmoid scores)")
        multilabel = True
    return "sigmoid" if multilabel else "softmax"


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
        official = task_state.get("labels") if isinstance(task_state, Mapping) else None
        if ids is None and isinstance(official, Mapping) and official:
            # the official fine-tuning task stores {label id: logit index}, without display names
            ids = [label for label, _ in sorted(official.items(), key=lambda item: int(item[1]))]
        if ids is None:
            logger.info("%s: no label names stored; using class_0..class_%d (pass --labels CSV)", source, num_classes - 1)
            return placeholder_labels(num_classes)
        ids = [str(i) for i in ids]
        names = [str(n) for n in names] if names is not None else list(ids)
        if len(names) != len(ids):
            raise CheckpointError(f"{source}: task_state has {len(ids)} label_ids but {len(names)} label_names")
        labels = [Label(i, a, b) for i, (a, b) in enumerate(zip(ids, names))]
        origin = "task_state"
    if len(labels) != num_classes:
        raise CheckpointError(f"{source}: {origin} lists {len(labels)} labels but the head has {num_classes} classes")
    return labels


def _with_stored_frontend(
    ckpt: Mapping[str, Any], overrides: Optional[Mapping[str, Any]]
) -> Optional[Mapping[str, Any]]:
    """The caller's front-end overrides over what an official-layout checkpoint written by this
    package keeps in ``extra_state["sslam_frontend"]`` (a normalisation the official config cannot name)."""
    extra = ckpt.get("extra_state")
    stored = extra.get("sslam_frontend") if isinstance(extra, Mapping) else None
    if not isinstance(stored, Mapping):
        return overrides
    merged = dict(stored)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return merged


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
        raise UnknownCheckpointError(f"{source}: these entries are not tensors: {list_keys(bad)}")
    cfg = ckpt.get("cfg") if ckpt.get("cfg") is not None else ckpt.get("args")
    encoder = infer_encoder_config(encoder_state, cfg, num_heads, source)
    frontend = infer_frontend(cfg, encoder, _with_stored_frontend(ckpt, frontend_overrides))
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
    check_state(export, source)
    return export


def load_checkpoint_as_export(
    path: Union[str, Path], trust: bool = False, **kwargs: Any
) -> EncoderExport:
    """:func:`load_checkpoint_file` then :func:`export_from_checkpoint` (kwargs go there)."""
    ckpt = load_checkpoint_file(path, trust=trust)
    return export_from_checkpoint(ckpt, source=str(path), **kwargs)


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
