"""Which checkpoint a launch starts from: the run's own, an intact older one, or none.

Applied by the launcher to the whole config before any process starts, while
it holds the run folder's lock (:mod:`.run_lock`), so that no other launch
writes a checkpoint between this choice and the ranks' loading it
(:func:`choose_checkpoint`):

* ``checkpoint_last.pt`` in the run's checkpoint folder: resume from it, after
  checking that it belongs to the same run (same task and model, same initial
  weights); the log names the file and its update.
* a damaged ``checkpoint_last.pt`` (a kill while fairseq copied it): resume from
  the newest intact checkpoint of the folder, with a warning naming both; stop
  with a clear message when there is none.
* a ``checkpoint_last.pt`` already at ``optimization.max_update``: nothing to
  train; the launch says so and ends (fairseq would train one more update
  before checking, and overwrite a finished run's checkpoint).
* none: start from ``checkpoint.continue_once`` (stage 2 from stage 1, with a
  fresh optimiser, schedule, meters and data position) or from scratch.

fairseq would apply ``checkpoint.reset_*`` to the continued checkpoint and to
every later resume alike; here they apply to the first launch only.
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig

__all__ = [
    "CheckpointSummary",
    "DamagedCheckpointError",
    "read_checkpoint_summary",
    "choose_checkpoint",
    "already_finished",
    "resolve_launch_path",
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

DEFAULT_RESTORE_FILE = "checkpoint_last.pt"
RESET_FLAGS = ("reset_optimizer", "reset_lr_scheduler", "reset_meters", "reset_dataloader")
# Settings that make two launches the same run; a resume with other values is refused.
SAME_RUN_KEYS = ("task._name", "model._name", "model.model_path", "model.mixing.enabled", "checkpoint.continue_once")


class DamagedCheckpointError(RuntimeError):
    """A checkpoint file that cannot be read; the message names it and the reason."""


@dataclass
class CheckpointSummary:
    path: str
    num_updates: int
    epoch: int
    cfg: Optional[Dict[str, Any]]  # None when the file's config cannot be read safely


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


def read_checkpoint_summary(path: str) -> CheckpointSummary:
    """Update, epoch and config of a fairseq checkpoint, without reading its tensors.

    Raises:
        DamagedCheckpointError: the file is truncated or otherwise unreadable.
    """
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err):
            raise DamagedCheckpointError(f"{path}: {err}") from err
        # Intact, but it needs the full unpickler (an old checkpoint): no summary.
        return CheckpointSummary(path, -1, -1, None)
    except Exception as err:  # truncated zip, EOF, bad header...
        raise DamagedCheckpointError(f"{path}: {type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or "model" not in state:
        raise DamagedCheckpointError(f"{path}: not a fairseq checkpoint (no 'model' entry)")
    history = state.get("optimizer_history") or [{}]
    itr = (state.get("extra_state") or {}).get("train_iterator") or {}
    cfg = state.get("cfg")
    return CheckpointSummary(path, int(history[-1].get("num_updates", 0)), int(itr.get("epoch", 0)), cfg)


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


def _select(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return None
        node = node.get(part) if hasattr(node, "get") else None
    return node


def check_same_run(cfg: DictConfig, summary: CheckpointSummary) -> None:
    """Refuse to resume a checkpoint of another run (another model, task or starting point)."""
    if summary.cfg is None:
        return
    different = []
    for key in SAME_RUN_KEYS:
        saved, current = _select(summary.cfg, key), _select(cfg, key)
        if saved != current:
            different.append(f"{key}: {saved!r} in the checkpoint, {current!r} now")
    if different:
        raise ValueError(
            f"{summary.path} belongs to another run ({'; '.join(different)}). Resuming it would mix two runs: "
            "give this run its own folder with hydra.run.dir=..., or move that checkpoint folder away"
        )
    saved_data, data = _select(summary.cfg, "task.data"), _select(cfg, "task.data")
    if saved_data != data:
        logger.warning("resuming a run that trained on task.data=%s with task.data=%s", saved_data, data)


def choose_checkpoint(cfg: DictConfig) -> Optional[CheckpointSummary]:
    """Set ``cfg.checkpoint`` for this launch; returns the checkpoint it resumes, if any.

    Makes ``save_dir`` absolute (relative to the run folder, where hydra runs)
    and ``restore_file`` / ``continue_once`` absolute (relative to the launch folder).
    """
    ckpt = cfg.checkpoint
    ckpt.save_dir = os.path.abspath(ckpt.save_dir)
    continue_once = ckpt.get("continue_once")
    if continue_once:
        ckpt.continue_once = continue_once = resolve_launch_path(continue_once)
    if ckpt.restore_file != DEFAULT_RESTORE_FILE:  # the user's explicit choice
        ckpt.restore_file = resolve_launch_path(ckpt.restore_file)
        logger.info("checkpoint.restore_file: starting from %s", ckpt.restore_file)
        return None

    last = os.path.join(ckpt.save_dir, f"checkpoint_last{ckpt.get('checkpoint_suffix', '')}.pt")
    resumed: Optional[CheckpointSummary] = None
    if os.path.exists(last):
        try:
            resumed = read_checkpoint_summary(last)
        except DamagedCheckpointError as err:
            resumed = newest_intact_checkpoint(ckpt.save_dir, exclude=last)
            if resumed is None:
                raise DamagedCheckpointError(
                    f"{err}. {ckpt.save_dir} holds no other intact checkpoint: move {last} away "
                    "to start this run again from the beginning"
                ) from err
            logger.warning("%s; resuming from the newest intact checkpoint %s instead", err, resumed.path)
            ckpt.restore_file = resumed.path
        check_same_run(cfg, resumed)
        logger.info("resuming from %s (update %d, epoch %d)", resumed.path, resumed.num_updates, resumed.epoch)
    elif continue_once:
        if not os.path.isfile(continue_once):
            raise FileNotFoundError(f"checkpoint.continue_once={continue_once!r} is not a file")
        logger.info(
            "no checkpoint in %s yet: starting from the weights of %s with a fresh optimiser, schedule and meters",
            ckpt.save_dir,
            continue_once,
        )
    else:
        logger.info("no checkpoint in %s yet: training from scratch", ckpt.save_dir)
    if continue_once:
        for flag in RESET_FLAGS:
            ckpt[flag] = resumed is None
    return resumed


def already_finished(cfg: DictConfig, resumed: Optional[CheckpointSummary]) -> bool:
    """True when the checkpoint being resumed already holds ``optimization.max_update`` updates.

    fairseq checks ``max_update`` only after an update, so relaunching a finished
    run (typed again, or requeued by a scheduler) would train one update past the
    end and overwrite its last checkpoint; the launcher ends the launch instead.
    """
    max_update = _select(cfg, "optimization.max_update") or 0
    if resumed is None or max_update <= 0 or resumed.num_updates < max_update:
        return False
    logger.info(
        "%s already holds update %d and optimization.max_update=%d: nothing to train. Raise "
        "optimization.max_update to train on, or give a new run folder (hydra.run.dir=...)",
        resumed.path, resumed.num_updates, max_update,
    )
    return True
