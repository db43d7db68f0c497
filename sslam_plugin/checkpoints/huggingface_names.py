"""Parameter names of the EAT Hugging Face model (``EATModel``) <-> this package's export names.

Weights, theirs <-> ours (:class:`~sslam_plugin.models.AudioEncoder`):

=====================================  ===============================
``model.local_encoder.proj.*``          ``patch_embed.proj.*``
``model.extra_tokens``                  ``cls_token``
``model.fixed_positional_encoder.positions``  ``pos_embed``
``model.pre_norm.*``                    ``input_norm.*`` (the LayerNorm after
                                        the CLS token is prepended; official
                                        fairseq name ``context_encoder.norm``)
``model.blocks.N.*``                    ``blocks.N.*`` (same post-norm blocks:
                                        ``norm1`` after attention, ``norm2``
                                        after the MLP)
``model.fc_norm.*``, ``model.head.*``   ``fc_norm.*``, ``head.*`` (fine-tuned only)
=====================================  ===============================
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

import torch

from .errors import UnknownCheckpointError, list_keys
from .export_format import EncoderExport

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "HEAD_NAMES", "hf_state_from_export", "export_state_from_hf"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_PREFIX = "model."  # EATModel keeps the network as self.model

# (our AudioEncoder name or prefix, the HF name or prefix inside EATModel.model)
_ENCODER_NAMES: Tuple[Tuple[str, str], ...] = (
    ("patch_embed.proj.", "local_encoder.proj."),
    ("pos_embed", "fixed_positional_encoder.positions"),
    ("cls_token", "extra_tokens"),
    ("input_norm.", "pre_norm."),
    ("blocks.", "blocks."),
)
HEAD_NAMES = ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")


def _rename(name: str, forward: bool) -> str:
    for ours, theirs in _ENCODER_NAMES:
        src, dst = (ours, theirs) if forward else (theirs, ours)
        if name == src or (src.endswith(".") and name.startswith(src)):
            return dst + name[len(src) :]
    raise KeyError(name)


def hf_state_from_export(export: EncoderExport) -> Dict[str, torch.Tensor]:
    """The export's weights under the names of ``EATModel`` (``model.`` prefix)."""
    out = {_PREFIX + _rename(k, True): v for k, v in export.encoder_state.items()}
    out.update({_PREFIX + k: v for k, v in export.head_state.items()})
    return out


def export_state_from_hf(state: Mapping[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    """``EATModel`` weights -> export names (``encoder.*``, ``fc_norm.*``, ``head.*``).

    Names without the ``model.`` prefix (the bare ``EAT`` module saved) are accepted too.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    for name, value in state.items():
        inner = name[len(_PREFIX) :] if name.startswith(_PREFIX) else name
        if inner in HEAD_NAMES:
            out[inner] = value
            continue
        try:
            out["encoder." + _rename(inner, False)] = value
        except KeyError:
            unknown.append(name)
    if unknown:
        raise UnknownCheckpointError(
            f"{source}: parameter names that are not part of the EAT Hugging Face model: {list_keys(unknown)}"
        )
    return out
