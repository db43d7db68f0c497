"""Hugging Face hub repository ids (``owner/name``) where a checkpoint path is expected.

A string that is no path here and has the form ``owner/name`` is a hub
repository, downloaded with ``huggingface_hub`` (config.json and
model.safetensors only). A string that looks like a local path (``./x``,
``/x``, ``~/x``, or ``folder/x`` where ``folder`` exists here) is never sent to
the hub: a mistyped local folder gets "no such file or folder", not hub advice.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

from .errors import CheckpointError
from .huggingface_names import CONFIG_FILE, WEIGHTS_FILE

__all__ = ["looks_like_hub_repo_id", "looks_like_local_path", "check_local_path", "download_hub_repo", "DOWNLOAD_COMMAND"]

logger = logging.getLogger(__name__)

# huggingface_hub's command line (the old `huggingface-cli` is gone from current releases)
DOWNLOAD_COMMAND = "hf download"
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_local_path(path: Union[str, Path]) -> bool:
    """Whether ``path`` is meant as a path on this machine, existing or not.

    True for ``./x``, ``../x``, ``/x``, ``~/x``, a checkpoint file name
    (``.pt``, ``.safetensors``...), or ``folder/x`` whose first folder exists here.
    """
    text = str(path)
    if os.path.exists(text) or text.startswith(("./", "../", "/", "~", ".\\")) or os.path.isabs(text):
        return True
    if text.lower().endswith(_FILE_SUFFIXES):
        return True
    first = text.replace("\\", "/").split("/", 1)[0]
    return "/" in text.replace("\\", "/") and os.path.isdir(first)


def check_local_path(path: Union[str, Path]) -> None:
    """Raise "no such file or folder" for a path meant as local (:func:`looks_like_local_path`) that is not here.

    Where a folder on the way is missing too, the message names the deepest one
    that exists: where the typo starts.
    """
    text = str(path)
    if os.path.exists(os.path.expanduser(text)) or not looks_like_local_path(text):
        return
    parent = Path(os.path.expanduser(text)).absolute().parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = "" if existing == parent else f" (the deepest existing folder on that path is {existing})"
    raise CheckpointError(f"{text}: no such file or folder{where}")


def looks_like_hub_repo_id(path: Union[str, Path]) -> bool:
    """``owner/name`` that is not a path on this machine (e.g. ``ta012/SSLAM_pretrain``)."""
    text = str(path)
    return bool(_REPO_ID.match(text)) and not looks_like_local_path(text)


def download_hub_repo(repo_id: str, revision: Optional[str] = None) -> Path:
    """The local snapshot of a hub repository (config.json and model.safetensors), downloaded if needed.

    Raises:
        CheckpointError: ``huggingface_hub`` is missing, the hub cannot be reached
            (offline, no network, HF_HUB_OFFLINE=1 without a cached copy) or the
            repository does not exist; the message names the repository and what to do.
    """
    try:
        import huggingface_hub
    except ImportError as err:
        raise CheckpointError(
            f"{repo_id!r} is not a file or folder here and looks like a Hugging Face repository id, but "
            "the 'huggingface_hub' package is not installed: pip install huggingface_hub, or download the "
            "repository's config.json and model.safetensors into a folder and pass that folder"
        ) from err
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]
        )
    except Exception as err:  # offline mode, network errors, unknown or gated repositories
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{repo_id!r} is not a file or folder here, and downloading it from the Hugging Face hub failed "
            f"({type(err).__name__}: {reason}). Check the repository id and the network (HF_HUB_OFFLINE=1 "
            f"allows only copies already in the cache), or run `{DOWNLOAD_COMMAND} {repo_id} {CONFIG_FILE} "
            f"{WEIGHTS_FILE} --local-dir FOLDER` on a machine with access and pass FOLDER"
        ) from err
    logger.info("%s: using the hub snapshot in %s", repo_id, folder)
    return Path(folder)
