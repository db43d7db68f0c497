"""What a launch needs to know of a checkpoint file (update, epoch, config, kind), without its tensors."""

from __future__ import annotations

import glob
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from .config_keys import select
from .launch_refusals import DamagedCheckpointError

__all__ = ["CheckpointSummary", "read_checkpoint_summary", "newest_intact_checkpoint", "CLASSIFIER_MODEL_NAME"]

logger = logging.getLogger(__name__)

CLASSIFIER_MODEL_NAME = "sslam_classifier"


@dataclass
class CheckpointSummary:
    path: str
    num_updates: int
    epoch: int
    cfg: Optional[Dict[str, Any]]  # None when the file's config cannot be read safely
    finetuned: bool = False  # a classifier (ours or official): no decoder, a head


def read_checkpoint_summary(path: str) -> CheckpointSummary:
    """Update, epoch and config of a fairseq checkpoint, without reading its tensors.

    Raises:
        DamagedCheckpointError: the file is truncated or otherwise unreadable.
    """
    from ..checkpoints.files import describe_unreadable, refused_global

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        if refused_global(path, err) is None:
            raise DamagedCheckpointError(f"{path}: {describe_unreadable(path)}") from err
        # Intact, but it needs the full unpickler (an old checkpoint): no summary.
        return CheckpointSummary(path, -1, -1, None)
    except Exception as err:  # truncated zip, EOF, bad header... (torch's words would not name the file)
        raise DamagedCheckpointError(f"{path}: {describe_unreadable(path)}") from err
    if not isinstance(state, dict) or "model" not in state:
        keys = sorted(map(str, state))[:8] if isinstance(state, dict) else type(state).__name__
        raise DamagedCheckpointError(f"{path}: a PyTorch file but not a fairseq checkpoint (no 'model' entry; holds {keys})")
    history = state.get("optimizer_history") or [{}]
    itr = (state.get("extra_state") or {}).get("train_iterator") or {}
    cfg = state.get("cfg")
    names = list(state["model"]) if isinstance(state["model"], dict) else []
    finetuned = "head.weight" in names or any(n.startswith("model.blocks.") for n in names) or (
        select(cfg, "model._name") == CLASSIFIER_MODEL_NAME
    )
    return CheckpointSummary(path, int(history[-1].get("num_updates", 0)), int(itr.get("epoch", 0)), cfg, finetuned)


def newest_intact_checkpoint(folder: str, exclude: str) -> Optional[CheckpointSummary]:
    """The intact ``checkpoint*.pt`` of ``folder`` with the most updates (then the newest file)."""
    intact: List[CheckpointSummary] = []
    for path in glob.glob(os.path.join(folder, "checkpoint*.pt")):
        if os.path.abspath(path) == os.path.abspath(exclude):
            continue
        try:
            intact.append(read_checkpoint_summary(path))
        except DamagedCheckpointError as err:
            logger.warning("skipping damaged checkpoint %s", err)
    if not intact:
        return None
    return max(intact, key=lambda s: (s.num_updates, os.path.getmtime(s.path)))
