"""What a launch decides once, on the whole config, before any process starts, and its log set-up."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import warnings
from typing import Any

from .launch_options import LAUNCHED_ENV, apply_launch_options
from .launch_paths import resolve_launch_path, resolve_model_path
from .relaunch_changes import check_config_changes
from .resume import already_finished, choose_checkpoint
from .topology import use_cpu

__all__ = ["prepare_run", "train_fp16_runs_in_float32_on_cpu", "place_training_curves", "drop_failing_log_files", "quiet_failed_save_tracebacks",
           "fold_config_and_model", "CONFIG_AND_MODEL_LOG", "quiet_known_warnings"]

logger = logging.getLogger(__name__)


def prepare_run(cfg: Any, world_size: int) -> bool:
    """Everything decided once per launch, on the whole config, before processes start.

    The launch settings are checked first (:mod:`.launch_options`), then the
    checkpoint is chosen (:mod:`.resume`) and the relaunch compared with it
    (:mod:`.relaunch_changes`). Returns False when there is nothing to train
    (the run already reached ``max_update``).
    """
    _point_user_dir_at_this_package(cfg)
    place_training_curves(cfg)
    if "task" in cfg and cfg.task.get("data"):
        cfg.task.data = resolve_launch_path(cfg.task.data)
    if "model" in cfg and cfg.model.get("model_path"):
        cfg.model.model_path = resolve_model_path(cfg.model.model_path)  # or a hub repository id
    cfg.checkpoint.save_dir = os.path.abspath(cfg.checkpoint.save_dir)
    train_fp16_runs_in_float32_on_cpu(cfg)
    apply_launch_options(cfg, world_size)  # a bad setting is refused before anything is written
    resumed = choose_checkpoint(cfg)
    if already_finished(cfg, resumed):
        return False
    check_config_changes(cfg, resumed, world_size)  # a relaunch may not turn into another experiment
    os.environ[LAUNCHED_ENV] = "1"  # inherited by the processes started below
    return True


def train_fp16_runs_in_float32_on_cpu(cfg: Any) -> bool:
    """A recipe's ``common.fp16: true`` on a CPU: say so and train in float32 (True when changed).

    fairseq would run float16 arithmetic on the CPU with a dynamic loss scale: slow, and not what
    the recipe's fp16 is for (CUDA mixed precision). ``common.bf16=true`` is the CPU's
    mixed precision and is left as asked.
    """
    common = cfg.common
    if not (common.get("fp16") or common.get("memory_efficient_fp16")) or not use_cpu(cfg):
        return False
    logger.warning(
        "common.fp16=true asks for CUDA mixed precision, but this run is on the CPU: training in float32 "
        "(common.bf16=true for bfloat16 on a CPU, common.fp16=false to silence this)"
    )
    common.fp16 = False
    common.memory_efficient_fp16 = False
    return True


def _point_user_dir_at_this_package(cfg: Any) -> None:
    """``common.user_dir: sslam_plugin`` -> this package's folder.

    The launcher imported the package already; fairseq accepts that only when
    ``user_dir`` names the same folder, and its own resolution of a bare name
    (relative to the fairseq package) does not normalise the path.
    """
    user_dir = cfg.common.get("user_dir")
    if user_dir and os.path.basename(os.path.normpath(user_dir)) == __package__.split(".")[0]:
        cfg.common.user_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # sslam_plugin/


def place_training_curves(cfg: Any) -> None:
    """Where fairseq's TensorBoard events go, and the name of its W&B run.

    A relative ``common.tensorboard_logdir`` lives in the run folder, like
    ``checkpoint.save_dir`` (hydra has changed into it), so ``tensorboard
    --logdir runs`` shows every run of a folder side by side; it is made
    absolute here so that every rank and the log name the same folder. fairseq
    names a W&B run after ``checkpoint.save_dir``'s last folder, which is
    ``checkpoints`` in every recipe: ``WANDB_NAME`` (unless set) becomes the
    run folder's name instead.
    """
    if "common" not in cfg:
        return
    if cfg.common.get("tensorboard_logdir"):
        cfg.common.tensorboard_logdir = os.path.abspath(cfg.common.tensorboard_logdir)
        logger.info("TensorBoard events in %s (view: tensorboard --logdir %s)",
                    cfg.common.tensorboard_logdir, cfg.common.tensorboard_logdir)
    if cfg.common.get("wandb_project") and not os.environ.get("WANDB_NAME") and "checkpoint" in cfg:
        save_dir = os.path.abspath(cfg.checkpoint.save_dir)
        name = os.path.basename(save_dir)
        if name == "checkpoints":
            name = os.path.basename(os.path.dirname(save_dir))
        os.environ["WANDB_NAME"] = name  # read by fairseq in each rank; inherited by the processes started below


def drop_failing_log_files() -> None:
    """A log file that cannot be written (a full disk) is reported once and dropped.

    logging's default prints a traceback for every record it fails to write,
    which buries the error that matters under dozens of them. Set on the class:
    fairseq's ``train.main`` configures hydra's logging again, with new handlers.
    """
    logging.FileHandler.handleError = _drop_log_file  # type: ignore[method-assign]


def _drop_log_file(handler: logging.Handler, record: logging.LogRecord) -> None:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for owner in loggers:
        if handler in owner.handlers:
            owner.removeHandler(handler)
    sys.stderr.write(f"cannot write the log file {getattr(handler, 'baseFilename', handler)} "
                     f"({sys.exc_info()[1]}): logging to the terminal only\n")


class _FailedSaveFilter(logging.Filter):
    """Drops fairseq's traceback of a save that a full disk broke: the launch reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"[Errno {errno.ENOSPC}]" in record.getMessage())


def quiet_failed_save_tracebacks() -> None:
    """fairseq logs the traceback of a failed save before raising it; on a full disk the rank's one line says it.

    (``fairseq.checkpoint_utils._torch_persistent_save``; the error itself is
    reported by the launcher, :func:`.launch_refusals.disk_full`.)
    """
    source = logging.getLogger("fairseq.checkpoint_utils")
    if not any(isinstance(f, _FailedSaveFilter) for f in source.filters):
        source.addFilter(_FailedSaveFilter())


CONFIG_AND_MODEL_LOG = "config_and_model.log"


class _ConfigAndModelFilter(logging.Filter):
    """fairseq's start-up log of the whole config and model printout: written to a file, one line in the log."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.written = False

    def filter(self, record: logging.LogRecord) -> bool:
        from omegaconf import DictConfig
        from torch import nn

        if not isinstance(record.msg, (DictConfig, nn.Module)):
            return True
        what = "config" if isinstance(record.msg, DictConfig) else "model"
        text = str(record.msg)
        if what == "config":
            with contextlib.suppress(Exception):  # YAML reads better than the dict's one line; either will do
                from omegaconf import OmegaConf

                text = OmegaConf.to_yaml(record.msg)
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a" if self.written else "w") as f:
                f.write(f"# {what}\n{text}\n\n")
            self.written = True
        except OSError as err:
            record.msg, record.args = f"the {what} ({len(text)} characters) not written to {self.path}: {err}", ()
            return True
        record.msg, record.args = f"the {what} is in {self.path}", ()
        return True


def fold_config_and_model(cfg: Any) -> None:
    """fairseq's log of the whole config (one line of thousands of characters) and of the model goes to
    ``RUN/config_and_model.log`` (the run folder: above ``checkpoint.save_dir`` when that is
    ``checkpoints``); the log keeps one line naming the file."""
    save_dir = os.path.abspath(cfg.checkpoint.save_dir)
    run = os.path.dirname(save_dir) if os.path.basename(save_dir) == "checkpoints" else save_dir
    source = logging.getLogger("fairseq_cli.train")
    for old in [f for f in source.filters if isinstance(f, _ConfigAndModelFilter)]:
        source.removeFilter(old)
    source.addFilter(_ConfigAndModelFilter(os.path.join(run, CONFIG_AND_MODEL_LOG)))


# Warnings every run printed that ask nothing of the user: hydra's change of working directory (the
# recipes rely on it), pinned memory without a GPU, and fairseq's use of a deprecated autocast spelling.
_KNOWN_WARNINGS = (
    (UserWarning, "Future Hydra versions will no longer change working directory"),
    (UserWarning, "'pin_memory' argument is set as true but no accelerator is found"),
    (FutureWarning, re.escape("`torch.cuda.amp.autocast(args...)` is deprecated")),
)


def quiet_known_warnings() -> None:
    """Silence the start-up warnings in :data:`_KNOWN_WARNINGS` (each by its message; others still show)."""
    for category, message in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
