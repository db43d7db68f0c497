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

__all__ = [
    "load_checkpoint_file",
    "corrupt_error",
    "describe_unreadable",
    "refused_global",
    "file_sha256",
    "plain_config",
    "config_value",
    "first_config_value",
]

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


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
ZIP_END_MAGIC = b"PK\x05\x06"  # end of central directory record: the last thing a complete zip holds
ZIP_END_SEARCH = 65536 + 22  # the record is within the last 64 KiB (comment) + 22 bytes
PICKLE_MAGIC = b"\x80"  # pickle protocol 2+ (the legacy torch format)


def describe_unreadable(path: Union[str, Path]) -> str:
    """What a file that does not load as a checkpoint is, in a few words.

    Judged from its bytes, never from the loader's message (torch's advises
    unpickling with ``weights_only=False``, which can run code stored in the file).
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes): the save or copy that wrote it was interrupted"
    with path.open("rb") as handle:
        head = handle.read(64)
        handle.seek(max(0, size - ZIP_END_SEARCH))
        tail = handle.read()
    if head.startswith(ZIP_MAGIC):
        if ZIP_END_MAGIC not in tail:
            return f"a truncated PyTorch checkpoint ({size} bytes, the end of the archive is missing)"
        return f"a corrupted PyTorch checkpoint ({size} bytes, its archive does not read)"
    if head.startswith(PICKLE_MAGIC):
        return f"a truncated or corrupted PyTorch checkpoint (legacy format, {size} bytes)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # binary (or a multi-byte character cut at 64 bytes: rare enough)
        text = ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        return f"not a PyTorch checkpoint: a text file ({size} bytes) starting {text[:24]!r}"
    return f"not a PyTorch checkpoint: {size} bytes of other data (starting {head[:8].hex()})"


def file_sha256(path: Union[str, Path], chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's contents, read in chunks (checkpoints are gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def refused_global(path: Union[str, Path], err: Exception) -> Optional[str]:
    """The Python object that ``weights_only=True`` refused in an intact checkpoint, or None.

    None also for a file that is no checkpoint at all: torch's weights-only loader
    words its errors on random bytes the same way.
    """
    refused = _unsupported_global(err)
    if refused is None or (refused == _UNKNOWN_OBJECT and not _looks_like_torch_file(Path(path))):
        return None
    return refused


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
        refused = refused_global(path, err)
        if refused is None:
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
    """The error for an unreadable file: what it is, and what to do about it.

    ``size`` and ``err`` are kept for callers; the message is judged from the
    file's bytes (:func:`describe_unreadable`), not from the loader's message.
    """
    logger.debug("%s: %s from the loader", path, type(err).__name__)  # its words may advise unpickling
    what = describe_unreadable(path)
    advice = "point at the right file" if what.startswith("not a") else "download or copy it again"
    return CorruptCheckpointError(f"{path}: {what}; {advice}")


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
