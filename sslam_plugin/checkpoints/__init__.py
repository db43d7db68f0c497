"""Checkpoints: reading, format detection, this package's export format, and foreign layouts.

* :mod:`.files`: safe ``torch.load`` of a checkpoint file; values from its config.
* :mod:`.errors`: what goes wrong, naming the file.
* :mod:`.official_names`: parameter names of official EAT/SSLAM checkpoints <-> ours.
* :mod:`.architecture`: the encoder and front end a checkpoint describes.
* :mod:`.export_format`: the self-contained export folder (safetensors + JSON).
* :mod:`.fairseq_layout`: fairseq checkpoints (official or ours) <-> exports.
* :mod:`.official_layout`: writing checkpoints the public EAT/SSLAM code loads as its own.
* :mod:`.huggingface`: EAT/SSLAM Hugging Face folders <-> exports (:mod:`.huggingface_names`: their
  parameter names).
* :mod:`.hub`: Hugging Face hub repository ids given where a path is expected.

A new layout (another hub's folder, say) is one more module converting to and
from :class:`EncoderExport`, and one more case in :func:`load_any`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from .errors import CheckpointError, CorruptCheckpointError, UnknownCheckpointError, UntrustedCheckpointError
from .export_format import DTYPES, EncoderExport, HeadConfig, Label, is_export, load_export, read_label_csv, save_export
from .fairseq_layout import (
    FINETUNED,
    PRETRAINING,
    DetectedFormat,
    detect_format,
    export_from_checkpoint,
    fairseq_checkpoint_from_export,
    load_checkpoint_as_export,
    save_fairseq_checkpoint,
)
from .architecture import infer_encoder_config, infer_frontend
from .files import load_checkpoint_file
from .hub import check_local_path, download_hub_repo, looks_like_hub_repo_id
from .huggingface import is_hf_folder, load_hf_folder, save_hf_folder
from .official_layout import official_checkpoint_from_export, pretraining_extras, save_official_checkpoint

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
    "is_hf_folder",
    "looks_like_hub_repo_id",
    "download_hub_repo",
    "load_hf_folder",
    "save_hf_folder",
    "official_checkpoint_from_export",
    "pretraining_extras",
    "save_official_checkpoint",
]


def load_any(
    path: Union[str, Path],
    trust: bool = False,
    teacher: bool = False,
    revision: Optional[str] = None,
    **kwargs: Any,
) -> EncoderExport:
    """An export folder, an EAT Hugging Face folder or hub repository id, or a fairseq checkpoint.

    Args:
        path: a folder, a checkpoint file, or ``owner/name`` of a Hugging Face
            repository (downloaded with ``huggingface_hub`` when it is not a path here).
        trust: allow the full unpickler for checkpoints that need it.
        teacher: the EMA teacher of a pre-training checkpoint.
        revision: the hub revision (branch, tag or commit) of a repository id.
        kwargs: num_heads, labels_csv, activation, frontend_overrides (see
            :func:`export_from_checkpoint`; exports ignore them).
    """
    if looks_like_hub_repo_id(path):
        path = download_hub_repo(str(path), revision=revision)
    check_local_path(path)  # a mistyped local path: "no such file or folder", not hub advice
    # checked before is_export: both are folders with a config.json
    if is_hf_folder(path):
        if teacher:
            raise CheckpointError(f"{path}: a Hugging Face folder holds one set of weights; --teacher applies to checkpoints")
        return load_hf_folder(path, **kwargs)
    if is_export(path):
        if teacher:
            raise CheckpointError(f"{path}: an export holds one set of weights; --teacher applies to checkpoints")
        return load_export(path)
    return load_checkpoint_as_export(path, trust=trust, teacher=teacher, **kwargs)
