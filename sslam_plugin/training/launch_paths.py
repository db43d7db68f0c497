"""Paths in a launch's config as the user meant them: against the folder they launched from."""

from __future__ import annotations

import os

__all__ = ["resolve_launch_path", "resolve_model_path"]


def resolve_launch_path(path: str) -> str:
    """A relative path as the user meant it: against the folder they launched from.

    hydra changes into its run directory before the task is built, so a plain
    relative path would resolve against the wrong folder.
    """
    if os.path.isabs(path):
        return path
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return os.path.join(HydraConfig.get().runtime.cwd, path)
    except ImportError:  # hydra is optional outside fairseq-hydra-train
        pass
    return os.path.abspath(path)


def resolve_model_path(path: str) -> str:
    """``model.model_path`` against the launch folder, or as given when it names a hub repository.

    ``owner/name`` that is no file or folder under the launch folder is a Hugging
    Face repository id (e.g. ``ta012/SSLAM_pretrain``), which ``load_any`` downloads.
    """
    from ..checkpoints import looks_like_hub_repo_id

    resolved = resolve_launch_path(path)
    if not os.path.exists(resolved) and looks_like_hub_repo_id(path):
        return path
    return resolved
