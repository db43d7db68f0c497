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
* a relaunch whose settings make it another experiment (data, model shape,
  seed, lr schedule, effective batch...) is refused with the list of changed
  keys, unless ``task.accept_config_changes=true`` (:mod:`.relaunch_changes`,
  called by the launcher once the effective batch is known).
* a checkpoint file that is empty, truncated, not a checkpoint, a fine-tuned
  classifier given to continue pre-training, or an official checkpoint in the
  run folder: one line naming the file and what it is (never torch's advice to
  unpickle it; :mod:`.launch_refusals`). A ``checkpoint.continue_once`` moved or copied elsewhere is the
  same starting point when its contents are (SHA-256, recorded at the first launch).
* too little free space for the next checkpoint: refused before training;
  ``*.pt.tmp`` left by an interrupted save are removed.
* none: start from ``checkpoint.continue_once`` (stage 2 from stage 1, with a
  fresh optimiser, schedule, meters and data position) or from scratch.

fairseq would apply ``checkpoint.reset_*`` to the continued checkpoint and to
every later resume alike; here they apply to the first launch only.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from omegaconf import DictConfig

from .checkpoint_summary import CheckpointSummary, newest_intact_checkpoint, read_checkpoint_summary
from .config_keys import select
from .launch_paths import resolve_launch_path, resolve_model_path
from .launch_refusals import (
    AnotherRunError,
    DamagedCheckpointError,
    WrongCheckpointError,
    check_free_space,
    remove_partial_saves,
)
from .relaunch_changes import ACCEPT_CHANGES_KEY

__all__ = [
    "choose_checkpoint",
    "already_finished",
    "check_same_run",
    "check_start_checkpoint",
    "resolve_launch_path",  # the tasks' and the classifier model's (launch_paths)
    "resolve_model_path",
]

logger = logging.getLogger(__name__)

DEFAULT_RESTORE_FILE = "checkpoint_last.pt"
RESET_FLAGS = ("reset_optimizer", "reset_lr_scheduler", "reset_meters", "reset_dataloader")
# Settings that make two launches the same run; a resume with other values is refused.
SAME_RUN_KEYS = ("task._name", "model._name", "model.model_path", "model.mixing.enabled", "checkpoint.continue_once")
OFFICIAL_MODEL_NAMES = ("data2vec_multi", "mae_image_pretraining", "mae_image_classification")  # the public code's
CONTINUE_ONCE_HASH_FILE = "continue_once.sha256"  # in the checkpoint folder: the stage-1 file's contents


def check_same_run(cfg: DictConfig, summary: CheckpointSummary) -> None:
    """Refuse to resume a checkpoint of another run (another model, task or starting point)."""
    if summary.cfg is None:
        return
    official = select(summary.cfg, "model._name")
    if official in OFFICIAL_MODEL_NAMES:
        raise AnotherRunError(
            f"{summary.path}: an official EAT/SSLAM checkpoint (model {official!r}), not a checkpoint of this run: "
            "start from it with checkpoint.continue_once=... (pre-training) or model.model_path=... (fine-tuning), "
            "and move it out of the checkpoint folder"
        )
    different = []
    for key in SAME_RUN_KEYS:
        saved, current = select(summary.cfg, key), select(cfg, key)
        if saved != current and not (key == "checkpoint.continue_once" and _same_start(saved, current, cfg)):
            different.append(f"{key}: {saved!r} in the checkpoint, {current!r} now")
    if different:
        if any(d.startswith("checkpoint.continue_once") for d in different):
            raise AnotherRunError(
                f"{summary.path} continues another starting point ({'; '.join(different)}) and the files' "
                "contents differ: relaunch with the checkpoint's checkpoint.continue_once (a copy with the same "
                "contents is accepted), or give a new run its own folder with hydra.run.dir=..."
            )
        raise AnotherRunError(
            f"{summary.path} belongs to another run ({'; '.join(different)}). Resuming it would mix two runs: "
            "give this run its own folder with hydra.run.dir=..., or move that checkpoint folder away"
        )


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

    if os.path.isdir(ckpt.save_dir):
        remove_partial_saves(ckpt.save_dir)
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
        check_start_checkpoint(cfg, continue_once)
        _record_start_hash(ckpt.save_dir, continue_once)
        logger.info(
            "no checkpoint in %s yet: starting from the weights of %s with a fresh optimiser, schedule and meters",
            ckpt.save_dir,
            continue_once,
        )
    else:
        logger.info("no checkpoint in %s yet: training from scratch", ckpt.save_dir)
    check_free_space(ckpt.save_dir, resumed)
    if continue_once:
        for flag in RESET_FLAGS:
            # a relaunch keeps reset_dataloader when asked (a changed manifest): the others would
            # throw away the run's optimiser, schedule or meters at every relaunch
            ckpt[flag] = resumed is None or (flag == "reset_dataloader" and bool(ckpt.get(flag)))
    return resumed


def check_start_checkpoint(cfg: DictConfig, path: str) -> CheckpointSummary:
    """``checkpoint.continue_once``: a readable checkpoint of a kind this task can continue.

    Raises:
        DamagedCheckpointError: empty, truncated or not a checkpoint (the message says which).
        WrongCheckpointError: a fine-tuned classifier given to continue pre-training.
    """
    try:
        start = read_checkpoint_summary(path)
    except DamagedCheckpointError as err:
        raise DamagedCheckpointError(f"checkpoint.continue_once={err}") from None
    if start.finetuned and select(cfg, "task._name") == "sslam_pretraining":
        raise WrongCheckpointError(
            f"checkpoint.continue_once={path}: a fine-tuned classifier checkpoint (a head, no decoder), but "
            "pre-training continues a pre-training checkpoint: stage 1's checkpoint_last.pt or an official "
            "pre-trained EAT/SSLAM checkpoint"
        )
    return start


def _record_start_hash(save_dir: str, path: str) -> None:
    """Remember the contents of the run's stage-1 file, so a moved or copied one is recognised later."""
    from ..checkpoints.files import file_sha256

    os.makedirs(save_dir, exist_ok=True)
    record = os.path.join(save_dir, CONTINUE_ONCE_HASH_FILE)
    with open(record, "w", encoding="utf-8") as handle:
        handle.write(f"{file_sha256(path)}  {path}\n")


def _same_start(saved: Optional[str], current: Optional[str], cfg: DictConfig) -> bool:
    """Whether ``current`` holds the same bytes as the run's stage-1 file ``saved`` (moved or copied).

    Compared with the hash recorded at the run's first launch, or with ``saved``
    itself where no record exists and it is still there.
    """
    from ..checkpoints.files import file_sha256

    if not saved or not current or not os.path.isfile(current):
        return False
    record = os.path.join(cfg.checkpoint.save_dir, CONTINUE_ONCE_HASH_FILE)
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as handle:
            expected = handle.read().split()[0]
    elif os.path.isfile(saved):
        expected = file_sha256(saved)
    else:
        return False
    same = file_sha256(current) == expected
    if same:
        logger.info("checkpoint.continue_once: %s has the contents of the run's %s (same SHA-256)", current, saved)
    return same


def already_finished(cfg: DictConfig, resumed: Optional[CheckpointSummary]) -> bool:
    """True when the checkpoint being resumed already holds ``optimization.max_update`` updates.

    fairseq checks ``max_update`` only after an update, so relaunching a finished
    run (typed again, or requeued by a scheduler) would train one update past the
    end and overwrite its last checkpoint; the launcher ends the launch instead.
    """
    max_update = select(cfg, "optimization.max_update") or 0
    if resumed is None or max_update <= 0 or resumed.num_updates < max_update:
        return False
    logger.info(
        "%s already holds update %d and optimization.max_update=%d: nothing to train. Raise "
        "optimization.max_update to train on (with %s=true where the lr schedule follows it), or give a new "
        "run folder (hydra.run.dir=...)",
        resumed.path, resumed.num_updates, max_update, ACCEPT_CHANGES_KEY,
    )
    return True
