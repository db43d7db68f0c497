"""Reading checkpoint files safely, and reading values out of their configs.

Checkpoints are read with ``torch.load(weights_only=True)``; one that needs
Python's full unpickler (which can run code stored in the file) is refused
unless the caller passes ``trust=True`` (``--trust-checkpoint``).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from .errors import CheckpointError, CorruptCheckpointError, UntrustedCheckpointError

__all__ = ["load_checkpoint_file", "corrupt_error", "plain_config", "config_value", "first_config_value"]

logger = logging.getLogger(__name__)


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
            raise corrupt_error(path, size, err) from err
    except Exception as err:  # truncated zip, wrong magic number, EOF, ...
        raise corrupt_error(path, size, err) from err
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
        raise corrupt_error(path, size, err) from err


def corrupt_error(path: Path, size: int, err: Exception) -> CorruptCheckpointError:
    """The error for an unreadable file, with what to do about it."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return CorruptCheckpointError(
        f"{path}: cannot read this file as a PyTorch checkpoint ({size} bytes): {reason}. "
        "The file is probably truncated or corrupted (an interrupted download or copy?); "
        "download or copy it again."
    )


def plain_config(cfg: Any) -> Any:
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


def config_value(cfg: Any, *path: str) -> Any:
    """``cfg[path[0]][path[1]]...`` or None where any level is missing."""
    node = cfg
    for key in path:
        node = plain_config(node)
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return plain_config(node)


def first_config_value(cfg: Any, *paths: Tuple[str, ...]) -> Any:
    for path in paths:
        value = config_value(cfg, *path)
        if value is not None:
            return value
    return None
