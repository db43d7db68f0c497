"""Checkpoints: reading, format detection, this package's export format, and foreign layouts.

* :mod:`.files`: safe ``torch.load`` of a checkpoint file; values from its config.
* :mod:`.errors`: what goes wrong, naming the file.
* :mod:`.official_names`: parameter names of official EAT/SSLAM checkpoints <-> ours.
* :mod:`.architecture`: the encoder and front end a checkpoint describes.
* :mod:`.export_format`: the self-contained export folder (safetensors + JSON).
* :mod:`.fairseq_layout`: fairseq checkpoints (official or ours) <-> exports.

A new layout (another hub's folder, say) is one more module converting to and
from :class:`EncoderExport`, and one more case in :func:`load_any`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

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
