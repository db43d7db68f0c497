"""The settings the launcher reads before any process starts, declared once and checked there.

``task.effective_batch_size`` (:class:`LaunchOptions`, in every task's config)
and ``task.failed_clips_dir`` (:class:`PretrainingLaunchOptions`, pre-training)
are declared here and composed into the task configs; the launcher checks them
on the whole config before any process starts (:func:`apply_launch_options`),
together with the CPU thread share (``OMP_NUM_THREADS``), and refuses a value
no process could run with in one line naming the key
(:class:`.launch_refusals.LaunchOptionsError`). It then derives
``optimization.update_freq`` (and, where needed, a lower ``dataset.batch_size``)
from the effective batch and the process count, so a recipe keeps its clips
per update on 1, 2, 4 or 8 GPUs, and points ``failed_clips_dir`` at the
checkpoint folder when unset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from fairseq.dataclass import FairseqDataclass

from .launch_refusals import LaunchOptionsError

__all__ = [
    "LAUNCHED_ENV", "LaunchOptions", "PretrainingLaunchOptions", "apply_launch_options", "check_launch_options",
    "keep_effective_batch", "share_cpu_threads", "threads_per_process",
]

logger = logging.getLogger(__name__)

LAUNCHED_ENV = "SSLAM_PLUGIN_LAUNCHER"  # set by the launcher; tells the tasks the launcher ran
THREADS_ENV = "OMP_NUM_THREADS"


@dataclass
class LaunchOptions(FairseqDataclass):
    """Launch settings every task takes; read and checked by the launcher, not by the ranks."""

    effective_batch_size: Optional[int] = field(
        default=None,
        metadata={
            "help": "clips per optimiser update over all processes; optimization.update_freq is derived from it "
            "and the number of processes (null: use update_freq as given)"
        },
    )


@dataclass
class PretrainingLaunchOptions(LaunchOptions):
    """:class:`LaunchOptions` plus the folder of the pre-training task's list of unusable clips."""

    failed_clips_dir: Optional[str] = field(
        default=None,
        metadata={"help": "folder of failed_clips.tsv (the launcher sets the checkpoint folder; null: only logged)"},
    )


def _whole_number(key: str, value: Any, meaning: str) -> Optional[int]:
    """``value`` as an int >= 1 (None stays None); anything else is refused naming ``key``."""
    if value is None:
        return None
    number = value
    if isinstance(value, str) and value.strip().lstrip("+").isdigit():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise LaunchOptionsError(f"{key}={value!r}: {meaning} must be a whole number >= 1")
    return number


def threads_per_process(environ: Optional[Dict[str, str]] = None) -> Optional[int]:
    """The user's ``OMP_NUM_THREADS`` (torch threads per process), checked; None when unset."""
    environ = os.environ if environ is None else environ
    if not environ.get(THREADS_ENV, "").strip():
        return None
    return _whole_number(THREADS_ENV, environ[THREADS_ENV].strip(), "torch threads per process (unset it to share "
                         "this machine's cores among the CPU processes)")


def check_launch_options(cfg: Any) -> LaunchOptions:
    """The launch settings of ``cfg`` (a whole config), checked; nothing is changed.

    Raises:
        LaunchOptionsError: one line naming the key and what it takes.
    """
    task = cfg.task if "task" in cfg and cfg.task is not None else {}
    effective = _whole_number(
        "task.effective_batch_size", task.get("effective_batch_size"),
        "clips per optimiser update over all processes (null: use optimization.update_freq as given)",
    )
    threads_per_process()
    if "failed_clips_dir" not in task:
        return LaunchOptions(effective_batch_size=effective)
    folder = task.get("failed_clips_dir")
    if folder is not None and not isinstance(folder, str):
        raise LaunchOptionsError(f"task.failed_clips_dir={folder!r}: a folder path, or null for the checkpoint folder")
    if folder and os.path.exists(folder) and not os.path.isdir(folder):
        raise LaunchOptionsError(f"task.failed_clips_dir={folder!r} is a file, not a folder: give a folder "
                                 "(or null for the checkpoint folder)")
    return PretrainingLaunchOptions(effective_batch_size=effective, failed_clips_dir=folder)


def apply_launch_options(cfg: Any, world_size: int) -> int:
    """Check the launch settings, then set what they decide in ``cfg`` for ``world_size`` processes.

    Returns the clips per update.

    Raises:
        LaunchOptionsError: a setting no process could run with (before any process starts).
    """
    options = check_launch_options(cfg)
    if isinstance(options, PretrainingLaunchOptions) and not options.failed_clips_dir:
        cfg.task.failed_clips_dir = cfg.checkpoint.save_dir  # failed_clips.tsv beside the checkpoints
    return keep_effective_batch(cfg, world_size, options.effective_batch_size)


def keep_effective_batch(cfg: Any, world_size: int, wanted: Optional[int] = None) -> int:
    """Set ``optimization.update_freq`` so that an update sees ``wanted`` clips (default: the task's setting).

    Lowers ``dataset.batch_size`` (with a warning) when even ``update_freq=1``
    would exceed it. Returns the clips per update.

    Raises:
        LaunchOptionsError: the clips cannot be split over the processes, or update_freq says otherwise.
    """
    if wanted is None:
        wanted = check_launch_options(cfg).effective_batch_size
    batch = int(cfg.dataset.batch_size or 0)
    if not wanted:
        freq = int(cfg.optimization.update_freq[0])
        clips = batch * world_size * freq
        logger.info("effective batch: %d clips per update (%d per process x %d processes x update_freq %d)",
                    clips, batch, world_size, freq)
        return clips
    if batch <= 0:
        raise LaunchOptionsError("task.effective_batch_size needs dataset.batch_size (clips per process and step)")
    if wanted % (batch * world_size) == 0:
        freq = wanted // (batch * world_size)
    elif wanted % world_size == 0 and wanted // world_size < batch:
        freq = 1
        logger.warning("dataset.batch_size lowered from %d to %d to keep %d clips per update on %d processes",
                       batch, wanted // world_size, wanted, world_size)
        batch = cfg.dataset.batch_size = wanted // world_size
    else:
        raise LaunchOptionsError(
            f"task.effective_batch_size={wanted} clips per update cannot be split into {world_size} processes x "
            f"dataset.batch_size={batch} x update_freq: choose a dataset.batch_size that divides "
            f"{wanted // world_size if wanted % world_size == 0 else wanted}, or set task.effective_batch_size=null "
            "and optimization.update_freq=[N] yourself"
        )
    given = list(cfg.optimization.update_freq)
    if given not in ([1], [freq]):
        raise LaunchOptionsError(
            f"optimization.update_freq={given} and task.effective_batch_size={wanted} both set the batch: "
            "keep one (task.effective_batch_size=null to choose update_freq yourself)"
        )
    cfg.optimization.update_freq = [freq]
    logger.info("effective batch: %d clips per update (%d per process x %d processes x update_freq %d)",
                wanted, batch, world_size, freq)
    return wanted


def share_cpu_threads(processes: int, environ: Optional[Dict[str, str]] = None) -> int:
    """Give each of ``processes`` CPU ranks started here its share of this machine's threads.

    torch gives every process as many threads as the machine has cores, so N
    ranks on one machine would run N times as many threads as cores, each
    waiting on the others. The share goes to the ranks as ``OMP_NUM_THREADS``,
    unless the user set that variable (taken as threads per process, as
    torchrun does).

    Returns:
        the threads per rank.
    """
    environ = os.environ if environ is None else environ
    given = threads_per_process(environ)
    if given is not None:
        return given
    threads = max(1, torch.get_num_threads() // processes)
    environ[THREADS_ENV] = str(threads)  # read by torch as each spawned rank starts
    logger.info("%d CPU processes here: %d torch threads each (set OMP_NUM_THREADS to choose)", processes, threads)
    return threads
