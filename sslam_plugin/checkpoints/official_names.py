"""Parameter names of official EAT / SSLAM (fairseq ``data2vec_multi``) checkpoints.

This package names its modules for what they are (``encoder.patch_embed``,
``encoder.cls_token``); official checkpoints use data2vec 2.0's multi-modal
layout (``modality_encoders.IMAGE.local_encoder.proj``, ``extra_tokens``) with
the EMA teacher nested under ``_ema``. These functions translate both ways so
official checkpoints load directly and ours load into the official code.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch

__all__ = [
    "CheckpointLayoutError",
    "encoder_to_official",
    "encoder_from_official",
    "pretrainer_to_official",
    "pretrainer_from_official",
    "TEACHER_UPDATES_KEY",
    "TRAINING_STATE_KEYS",
    "FINETUNED_ENCODER_PREFIX",
    "FINETUNED_HEAD_NAMES",
    "TEACHER_KEY",
    "is_official_encoder_name",
    "is_official_decoder_name",
    "finetuned_to_official",
    "finetuned_from_official",
]

_IMAGE = "modality_encoders.IMAGE."

# (our encoder name or prefix, official name or prefix)
_ENCODER_NAMES: Tuple[Tuple[str, str], ...] = (
    ("patch_embed.proj.", _IMAGE + "local_encoder.proj."),
    ("pos_embed", _IMAGE + "fixed_positional_encoder.positions"),
    ("cls_token", _IMAGE + "extra_tokens"),
    ("input_norm.", _IMAGE + "context_encoder.norm."),
    ("blocks.", "blocks."),
)
_DECODER_PREFIX = ("decoder.", _IMAGE + "decoder.")
_TEACHER_KEY = "_ema"
# Training-only entries of our pre-training checkpoints beside the parameters
# (official checkpoints have none): the update the EMA teacher last followed,
# and, in checkpoints of version 0.1, a stage-2 generator state that is no
# longer used (the draws are seeded per batch now).
TEACHER_UPDATES_KEY = "_teacher_updates"
TRAINING_STATE_KEYS = (TEACHER_UPDATES_KEY, "_mixing_generator_state")


class CheckpointLayoutError(KeyError):
    """Keys that belong to no known layout; the message lists them."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _rename(name: str, table: Tuple[Tuple[str, str], ...], forward: bool) -> str:
    for ours, theirs in table:
        src, dst = (ours, theirs) if forward else (theirs, ours)
        if name == src or (src.endswith(".") and name.startswith(src)):
            return dst + name[len(src) :]
    raise KeyError(name)


def _rename_all(
    state: Mapping[str, torch.Tensor], table: Tuple[Tuple[str, str], ...], forward: bool, what: str
) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    for name, value in state.items():
        try:
            out[_rename(name, table, forward)] = value
        except KeyError:
            unknown.append(name)
    if unknown:
        raise CheckpointLayoutError(f"{what}: unrecognised parameter names: {sorted(unknown)}")
    return out


def encoder_to_official(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our ``AudioEncoder`` state dict -> official names."""
    return _rename_all(state, _ENCODER_NAMES, True, "encoder")


def encoder_from_official(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official encoder names (no decoder, no ``_ema``) -> our ``AudioEncoder`` names."""
    return _rename_all(state, _ENCODER_NAMES, False, "official encoder")


def _pretrainer_table() -> Tuple[Tuple[str, str], ...]:
    return tuple(("encoder." + a, b) for a, b in _ENCODER_NAMES) + (_DECODER_PREFIX,)


def pretrainer_to_official(state: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """``BootstrapPretrainer`` state dict -> official layout, teacher under ``_ema``."""
    table = _pretrainer_table()
    student = {k: v for k, v in state.items() if not k.startswith("teacher.")}
    teacher = {k[len("teacher.encoder.") :]: v for k, v in state.items() if k.startswith("teacher.encoder.")}
    out: Dict[str, object] = dict(_rename_all(student, table, True, "pretrainer"))
    out[_TEACHER_KEY] = encoder_to_official(teacher)
    return out


def pretrainer_from_official(state: Mapping[str, object]) -> Dict[str, torch.Tensor]:
    """Official pre-training state dict -> ``BootstrapPretrainer`` names.

    Without ``_ema`` (a fine-tuned or exported student), the teacher starts as a
    copy of the student.
    """
    table = _pretrainer_table()
    student_state = {k: v for k, v in state.items() if k != _TEACHER_KEY and k not in TRAINING_STATE_KEYS}
    out = _rename_all(student_state, table, False, "official checkpoint")
    teacher = state.get(_TEACHER_KEY)
    if teacher is None:
        teacher_enc = {k[len("encoder.") :]: v for k, v in out.items() if k.startswith("encoder.")}
    else:
        teacher_enc = encoder_from_official(teacher)  # type: ignore[arg-type]
    out.update({"teacher.encoder." + k: v for k, v in teacher_enc.items()})
    return out


# ----------------------------------------------------------------------------
# Fine-tuned (``mae_image_classification``) layout: the encoder's official names
# under ``model.``, no decoder and no ``_ema``, plus the classifier at top level.
FINETUNED_ENCODER_PREFIX = "model."
FINETUNED_HEAD_NAMES = ("head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias")
TEACHER_KEY = _TEACHER_KEY


def is_official_encoder_name(name: str) -> bool:
    """Whether ``name`` is an encoder parameter or buffer in official naming."""
    try:
        _rename(name, _ENCODER_NAMES, False)
    except KeyError:
        return False
    return True


def is_official_decoder_name(name: str) -> bool:
    """Whether ``name`` belongs to the official pre-training decoder."""
    return name.startswith(_DECODER_PREFIX[1])


def finetuned_to_official(
    encoder_state: Mapping[str, torch.Tensor], head_state: Mapping[str, torch.Tensor]
) -> Dict[str, torch.Tensor]:
    """Our ``AudioEncoder`` state plus ``head.*`` / ``fc_norm.*`` -> fine-tuned official layout."""
    unknown = sorted(k for k in head_state if k not in FINETUNED_HEAD_NAMES)
    if unknown:
        raise CheckpointLayoutError(f"classification head: unrecognised parameter names: {unknown}")
    out = {FINETUNED_ENCODER_PREFIX + k: v for k, v in encoder_to_official(encoder_state).items()}
    out.update(head_state)
    return out


def finetuned_from_official(
    state: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Fine-tuned official layout -> (our ``AudioEncoder`` state, ``head.*`` / ``fc_norm.*`` state).

    Decoder weights left under ``model.`` (a fine-tune that kept them) are dropped.
    """
    encoder: Dict[str, torch.Tensor] = {}
    head: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    for name, value in state.items():
        if name in FINETUNED_HEAD_NAMES:
            head[name] = value
        elif name.startswith(FINETUNED_ENCODER_PREFIX):
            inner = name[len(FINETUNED_ENCODER_PREFIX) :]
            if is_official_encoder_name(inner):
                encoder[inner] = value
            elif not is_official_decoder_name(inner):
                unknown.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointLayoutError(f"fine-tuned checkpoint: unrecognised parameter names: {sorted(unknown)}")
    return encoder_from_official(encoder), head
