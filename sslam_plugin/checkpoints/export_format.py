"""This package's own checkpoint format: a self-contained export folder (no fairseq needed).

::

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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .._version import __version__
from ..config_utils import dataclass_from_dict
from ..data.labels import Label, placeholder_labels, read_label_descriptors
from ..features import SAMPLE_RATE, FbankConfig
from ..models.encoder import EncoderConfig
from ..vocabulary import parse_pooling
from .errors import CheckpointError, CorruptCheckpointError, list_keys
from .files import corrupt_error

__all__ = [
    "EXPORT_FORMAT",
    "DTYPES",
    "HeadConfig",
    "Label",
    "EncoderExport",
    "check_state",
    "is_export",
    "save_export",
    "load_export",
    "read_label_csv",
]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "sslam-encoder-export"
EXPORT_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "labels.json"

DTYPES: Dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


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
        self.pooling = parse_pooling(self.pooling, "head.pooling")
        if self.activation not in ("sigmoid", "softmax"):
            raise ValueError(f"head.activation must be 'sigmoid' or 'softmax', got {self.activation!r}")


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


def read_label_csv(path: Union[str, Path]) -> List[Label]:
    """``index,label_id,display_name`` lines (also AudioSet's ``class_labels_indices.csv``)."""
    try:
        labels = read_label_descriptors(path)
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(str(err)) from err
    return list(labels)


def expected_shapes(export: EncoderExport) -> Dict[str, Tuple[int, ...]]:
    """The shape of every tensor the export's architecture (and head) needs."""
    from ..models.encoder import AudioEncoder

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


def check_state(export: EncoderExport, source: str) -> None:
    """Every tensor the architecture needs is there with its shape, and nothing else."""
    expected = expected_shapes(export)
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
            f"missing {list_keys(missing)}, unexpected {list_keys(unexpected)}, wrong shapes {wrong}"
        )


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
        raise corrupt_error(weights_path, weights_path.stat().st_size, err) from err
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
            labels = placeholder_labels(head.num_classes)
    export = EncoderExport(
        encoder=encoder,
        frontend=dataclass_from_dict(FbankConfig, frontend_cfg),
        state=state,
        head=head,
        labels=labels,
        weights=config.get("weights", "student"),
        source=config.get("source", {}),
    )
    check_state(export, str(weights_path))
    return export
