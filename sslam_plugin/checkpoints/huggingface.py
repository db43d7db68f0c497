"""EAT / SSLAM Hugging Face folders (``AutoModel.from_pretrained(..., trust_remote_code=True)``), both directions.

Where the layout comes from: the modeling code published with the EAT and
SSLAM models on the Hugging Face hub (``worstchan/EAT-base_epoch30_pretrain``,
``worstchan/EAT-base_epoch30_finetune_AS2M``, ``ta012/SSLAM_pretrain``), files
``configuration_eat.py`` (``EATConfig``, ``model_type = "eat"``),
``modeling_eat.py`` (``EATModel``, which holds the network as ``self.model``),
``eat_model.py`` (``EAT``: module names and the fine-tuning head) and
``model_core.py`` (blocks, patch embedding, fixed positions). Copies of those
files on GitHub were read to learn the names; none of their code is used here.

::

    FOLDER/config.json        EATConfig fields (below) + model_type, architectures, auto_map
    FOLDER/model.safetensors  weights, names prefixed "model." (EATModel.model)

Weights: :mod:`.huggingface_names`; hub repository ids: :mod:`.hub`.

Config fields: ``embed_dim`` (width), ``depth``, ``num_heads``, ``patch_size``
(and ``stride``, equal to it), ``in_chans`` (1), ``mel_bins``, ``max_length``
(rows of the position table, in patches), ``img_size`` = ``[target_length,
mel_bins]``, ``mlp_ratio``, ``qkv_bias``, ``norm_eps``, ``norm_affine``,
``layer_norm_first`` (False: post-norm), ``fixed_positions``, the dropout and
drop-path rates, ``model_variant`` (``"pretrain"`` or ``"finetune"``) and
``num_classes``. The published fine-tuned model pools the CLS token, applies
``fc_norm`` (a LayerNorm with PyTorch's default eps, 1e-5) and the head, and
returns logits.

What the published config has no field for is written as extra keys, which
``PretrainedConfig`` keeps as plain attributes: ``norm_mean`` / ``norm_std``
(the fbank normalisation), ``id2label`` / ``label2id`` (the standard
``PretrainedConfig`` label fields), ``label_ids`` and ``problem_type``
(``multi_label_classification`` -> sigmoid scores, ``single_label_classification``
-> softmax). Folders without them read as AudioSet normalisation and, for heads,
multi-label scores.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union


from ..features import AUDIOSET_MEAN, AUDIOSET_STD, FbankConfig
from ..models.encoder import EncoderConfig
from .architecture import check_frontend
from .errors import CheckpointError, CorruptCheckpointError
from ..data.labels import placeholder_labels
from .export_format import DTYPES, EncoderExport, HeadConfig, Label, check_state, read_label_csv
from .files import corrupt_error
from .huggingface_names import CONFIG_FILE, WEIGHTS_FILE, export_state_from_hf, hf_state_from_export

__all__ = [
    "HF_MODEL_TYPE",
    "HF_ARCHITECTURE",
    "HF_AUTO_MAP",
    "HF_FC_NORM_EPS",
    "is_hf_folder",
    "hf_config_from_export",
    "load_hf_folder",
    "save_hf_folder",
]

logger = logging.getLogger(__name__)

HF_MODEL_TYPE = "eat"
HF_ARCHITECTURE = "EATModel"
HF_AUTO_MAP = {"AutoConfig": "configuration_eat.EATConfig", "AutoModel": "modeling_eat.EATModel"}
# eat_model.py builds fc_norm as nn.LayerNorm(embed_dim): PyTorch's default eps,
# not the 1e-6 of the encoder's norms and of the official fairseq head.
HF_FC_NORM_EPS = 1e-5
_PROBLEM_TYPES = {"multi_label_classification": "sigmoid", "single_label_classification": "softmax"}


# ------------------------------------------------------------------ detection
def _folder(path: Union[str, Path]) -> Path:
    path = Path(path)
    return path.parent if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE) else path


def _read_config(folder: Path) -> Dict[str, Any]:
    config_path = folder / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CorruptCheckpointError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return config


def is_hf_folder(path: Union[str, Path]) -> bool:
    """Whether ``path`` is an EAT Hugging Face folder (or its config.json / model.safetensors).

    Recognised by ``model_type == "eat"`` or ``"EATModel"`` in ``architectures``.
    """
    config_path = _folder(path) / CONFIG_FILE
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(config, dict):
        return False
    return config.get("model_type") == HF_MODEL_TYPE or HF_ARCHITECTURE in (config.get("architectures") or [])


# ------------------------------------------------------------------ reading
def _config_int(config: Mapping[str, Any], key: str, source: str, default: Optional[int] = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise CheckpointError(f"{source}: config.json has no '{key}'")
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: config.json '{key}' must be an integer, got {value!r}") from err


def _labels_from_config(config: Mapping[str, Any], num_classes: int, source: str) -> Optional[List[Label]]:
    id2label = config.get("id2label")
    if not isinstance(id2label, Mapping) or not id2label:
        return None
    try:
        names = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: config.json id2label keys must be class indices: {err}") from err
    if sorted(names) != list(range(num_classes)):
        # transformers fills in LABEL_0/LABEL_1 when a config has none; a mismatch means no real names
        logger.info("%s: id2label has %d entries for %d classes; ignoring it", source, len(names), num_classes)
        return None
    ids = config.get("label_ids")
    if not isinstance(ids, list) or len(ids) != num_classes:
        ids = [names[i] for i in range(num_classes)]
    return [Label(i, str(ids[i]), names[i]) for i in range(num_classes)]


def load_hf_folder(
    path: Union[str, Path],
    labels_csv: Optional[Union[str, Path]] = None,
    activation: Optional[str] = None,
    frontend_overrides: Optional[Mapping[str, Any]] = None,
    num_heads: Optional[int] = None,
) -> EncoderExport:
    """Read an EAT Hugging Face folder (pre-trained or fine-tuned) as an :class:`EncoderExport`.

    Args:
        path: the folder, or its config.json / model.safetensors.
        labels_csv: label names for a head whose config has no ``id2label``.
        activation: "sigmoid" or "softmax", overriding ``problem_type``.
        frontend_overrides: FbankConfig fields to set (target_length, norm_mean, norm_std).
        num_heads: overrides the config's ``num_heads``.

    Raises:
        CheckpointError: missing files, fields or tensors, named with the file.
    """
    folder = _folder(path)
    source = str(folder)
    config = _read_config(folder)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(
            f"{folder}: {WEIGHTS_FILE} is missing (only safetensors weights are read; "
            "download the repository's model.safetensors)"
        )
    try:
        import safetensors.torch as st

        raw = st.load_file(str(weights_path))
    except Exception as err:
        raise corrupt_error(weights_path, weights_path.stat().st_size, err) from err
    state = export_state_from_hf(raw, str(weights_path))

    embed_dim = _config_int(config, "embed_dim", source, 768)
    patch = _config_int(config, "patch_size", source, 16)
    stride = _config_int(config, "stride", source, patch)
    if stride != patch:
        raise CheckpointError(f"{source}: stride {stride} differs from patch_size {patch}; only non-overlapping patches are supported")
    if _config_int(config, "in_chans", source, 1) != 1:
        raise CheckpointError(f"{source}: in_chans must be 1 (a one-channel fbank), got {config.get('in_chans')}")
    if config.get("layer_norm_first", False):
        raise CheckpointError(f"{source}: layer_norm_first=true (pre-norm blocks) is not the EAT encoder")
    if config.get("norm_affine", True) is False or config.get("qkv_bias", True) is False:
        raise CheckpointError(f"{source}: norm_affine=false or qkv_bias=false is not the EAT encoder")
    if config.get("fixed_positions", True) is False:
        raise CheckpointError(f"{source}: fixed_positions=false is not supported (EAT uses fixed sine-cosine positions)")
    mel_bins = _config_int(config, "mel_bins", source, 128)
    img_size = config.get("img_size") or [1024, mel_bins]
    if not isinstance(img_size, (list, tuple)) or len(img_size) != 2:
        raise CheckpointError(f"{source}: img_size must be [target_length, mel_bins], got {img_size!r}")
    if int(img_size[1]) != mel_bins:
        raise CheckpointError(f"{source}: img_size {list(img_size)} disagrees with mel_bins {mel_bins}")
    depth = _config_int(config, "depth", source, 12)
    encoder = EncoderConfig(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=int(num_heads) if num_heads is not None else _config_int(config, "num_heads", source, 12),
        mlp_ratio=float(config.get("mlp_ratio", 4.0)),
        patch_size=patch,
        num_mel_bins=mel_bins,
        max_time_patches=_config_int(config, "max_length", source, 768),
        norm_eps=float(config.get("norm_eps", 1e-6)),
    )
    try:
        encoder.validate()
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err
    frontend_values: Dict[str, Any] = dict(
        target_length=int(img_size[0]),
        num_mel_bins=mel_bins,
        norm_mean=float(config.get("norm_mean", AUDIOSET_MEAN)),
        norm_std=float(config.get("norm_std", AUDIOSET_STD)),
    )
    frontend_values.update({k: v for k, v in (frontend_overrides or {}).items() if v is not None})
    frontend = FbankConfig(**frontend_values)
    try:
        check_frontend(frontend, encoder)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from err

    variant = config.get("model_variant", "pretrain")
    has_head = "head.weight" in state
    if variant not in ("pretrain", "finetune"):
        raise CheckpointError(f"{source}: model_variant must be 'pretrain' or 'finetune', got {variant!r}")
    if variant == "pretrain" and has_head:
        logger.warning("%s: model_variant 'pretrain' but the weights hold a head; reading the head", source)
    head = labels = None
    if has_head:
        num_classes = int(state["head.weight"].shape[0])
        if "num_classes" in config and int(config["num_classes"]) != num_classes:
            raise CheckpointError(
                f"{source}: config.json says num_classes={config['num_classes']} but head.weight has {num_classes} rows"
            )
        if activation is None:
            problem = config.get("problem_type")
            activation = _PROBLEM_TYPES.get(str(problem), "sigmoid")
            if problem is None:
                logger.info("%s: no problem_type in config.json; assuming a multi-label head (sigmoid scores)", source)
        head = HeadConfig(
            num_classes=num_classes,
            pooling="cls",  # the published EAT head always reads the CLS token
            fc_norm="fc_norm.weight" in state,
            fc_norm_eps=HF_FC_NORM_EPS,
            activation=activation,
        )
        head.validate()
        if labels_csv is not None:
            labels = read_label_csv(labels_csv)
            if len(labels) != num_classes:
                raise CheckpointError(f"{labels_csv}: lists {len(labels)} labels but the head has {num_classes} classes")
        else:
            labels = _labels_from_config(config, num_classes, source)
        if labels is None:
            logger.info("%s: no label names stored; using class_0..class_%d (pass --labels CSV)", source, num_classes - 1)
            labels = placeholder_labels(num_classes)
    elif variant == "finetune":
        raise CheckpointError(f"{weights_path}: model_variant 'finetune' but there is no model.head.weight")
    export = EncoderExport(
        encoder=encoder,
        frontend=frontend,
        state=state,
        head=head,
        labels=labels,
        source={"file": folder.name, "format": "EAT Hugging Face folder", "model_name": config.get("model_type")},
    )
    check_state(export, str(weights_path))
    return export


# ------------------------------------------------------------------ writing
def hf_config_from_export(export: EncoderExport) -> Dict[str, Any]:
    """config.json of an EAT Hugging Face folder for the export.

    Raises:
        CheckpointError: a head the published EAT code cannot compute (mean pooling, no fc_norm).
    """
    enc, head = export.encoder, export.head
    if head is not None:
        if head.pooling != "cls":
            raise CheckpointError(
                "the EAT Hugging Face model pools the CLS token; this head pools the mean of the patches, "
                "so it cannot be written in that layout (convert to an export or the official layout instead)"
            )
        if not head.fc_norm:
            raise CheckpointError(
                "the EAT Hugging Face model always applies fc_norm before the head; this head has none, "
                "so it cannot be written in that layout (convert to an export or the official layout instead)"
            )
        if abs(head.fc_norm_eps - HF_FC_NORM_EPS) > 1e-12:
            logger.warning(
                "fc_norm eps %g: the EAT Hugging Face code uses %g; logits may differ in the last digits",
                head.fc_norm_eps, HF_FC_NORM_EPS,
            )
    config: Dict[str, Any] = {
        "architectures": [HF_ARCHITECTURE],
        "auto_map": dict(HF_AUTO_MAP),
        "model_type": HF_MODEL_TYPE,
        "embed_dim": enc.embed_dim,
        "depth": enc.depth,
        "num_heads": enc.num_heads,
        "patch_size": enc.patch_size,
        "stride": enc.patch_size,
        "in_chans": 1,
        "mel_bins": enc.num_mel_bins,
        "max_length": enc.max_time_patches,
        # EATConfig's default; the pre-trained variant builds no head and ignores it
        "num_classes": head.num_classes if head is not None else 527,
        "model_variant": "finetune" if head is not None else "pretrain",
        "mlp_ratio": enc.mlp_ratio,
        "qkv_bias": True,
        # inference weights: no dropout or stochastic depth
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "activation_dropout": 0.0,
        "post_mlp_drop": 0.0,
        "start_drop_path_rate": 0.0,
        "end_drop_path_rate": 0.0,
        "layer_norm_first": False,
        "norm_eps": enc.norm_eps,
        "norm_affine": True,
        "fixed_positions": True,
        "img_size": [export.frontend.target_length, export.frontend.num_mel_bins],
        "norm_mean": export.frontend.norm_mean,
        "norm_std": export.frontend.norm_std,
        "torch_dtype": str(export.dtype).replace("torch.", ""),
    }
    if head is not None:
        labels = export.labels or placeholder_labels(head.num_classes)
        config["id2label"] = {str(label.index): label.name for label in labels}
        config["label2id"] = {label.name: label.index for label in labels}
        config["label_ids"] = [label.id for label in labels]
        config["problem_type"] = {v: k for k, v in _PROBLEM_TYPES.items()}[head.activation]
    return config


def save_hf_folder(export: EncoderExport, out_dir: Union[str, Path], dtype: Optional[str] = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of an EAT Hugging Face folder.

    The modeling files (``configuration_eat.py``, ``modeling_eat.py``,
    ``eat_model.py``, ``model_core.py``) are not written: copy them from the
    published EAT repository to load the folder with ``trust_remote_code=True``.

    Args:
        dtype: "float32", "float16" or "bfloat16"; None keeps the tensors' dtype.
    """
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        export = export.to(DTYPES[dtype])
    config = hf_config_from_export(export)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder; a Hugging Face model is a folder")
    out.mkdir(parents=True, exist_ok=True)
    import safetensors.torch as st

    state = {k: v.detach().cpu().contiguous().clone() for k, v in hf_state_from_export(export).items()}
    # transformers reads metadata format "pt" to know the tensors are PyTorch's
    st.save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    os.chmod(out / WEIGHTS_FILE, 0o666 & ~_umask())
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("wrote Hugging Face folder %s (%d tensors, %s)", out, len(state), config["torch_dtype"])
    return out


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
