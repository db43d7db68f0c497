"""One training process: set up (adapter, signals, watchdog), run fairseq's training, end cleanly."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from typing import Any, Callable, Dict, Optional

import torch

from . import watchdog
from .data_loading import close_all_batch_iterators
from .launch_refusals import LAUNCH_REFUSALS, LAUNCH_REFUSED_EXIT_STATUS, dataloader_mismatch, disk_full
from .preemption import requested_signal, stop_on_signals
from .run_setup import fold_config_and_model, quiet_failed_save_tracebacks, quiet_known_warnings

__all__ = ["run_rank", "die_with_launcher", "fork_data_workers", "exit_now"]

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_launcher(launcher_pid: int) -> None:
    """Have Linux kill this spawned rank (SIGKILL) when its launcher dies; end now if it died already.

    Without it a ``kill -9`` of the launcher leaves its ranks training as
    orphans, writing into a run folder whose lock went with the launcher. The
    parent-death signal follows the launcher's thread that spawned the ranks
    (its main thread, which lives as long as the launcher). The check of
    ``os.getppid()`` afterwards covers a launcher that died before the
    request took effect (the rank was re-parented already).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0),
                            ctypes.c_ulong(0)) != 0
    except (OSError, AttributeError):
        failed = True
    if failed:
        logger.warning("this rank cannot be tied to its launcher (prctl failed): it would outlive a kill -9 of it")
        return
    if os.getppid() != launcher_pid:
        logger.error("the launcher (pid %d) ended before this rank started: stopping", launcher_pid)
        exit_now(1)


def run_rank(
    index: int,
    main: Callable[..., Any],
    cfg: Any,
    kwargs: Dict[str, Any],
    first_rank: int,
    spawned: bool = False,
    launcher_pid: Optional[int] = None,
    rank_setup: Optional[Callable[[], None]] = None,
) -> None:
    """One training process: rank ``first_rank + index`` on device ``index`` of its node.

    ``rank_setup``: what the process needs before training (the fairseq
    adapter's ``install``: a spawned process starts without it).
    ``spawned``: this is a process the launcher (pid ``launcher_pid``) started;
    it dies with the launcher (:func:`die_with_launcher`), and leaves with
    ``os._exit`` once training is done and everything is flushed, because the
    interpreter's own teardown of gloo/DDP objects aborts it now and then
    ("terminate called without an active exception") after a finished run. A
    refusal met while training (a full disk) ends a spawned rank with one log
    line and :data:`.launch_refusals.LAUNCH_REFUSED_EXIT_STATUS`.
    """
    if spawned and launcher_pid is not None:
        die_with_launcher(launcher_pid)  # first: importing fairseq below takes seconds
    from fairseq.distributed import utils as distributed_utils

    if rank_setup is not None:
        rank_setup()
    quiet_failed_save_tracebacks()
    fold_config_and_model(cfg)
    quiet_known_warnings()
    if spawned:
        fork_data_workers()
    stop_on_signals()
    distributed = cfg.distributed_training.distributed_init_method is not None
    watchdog.start(first_rank + index if distributed else 0, watchdog.stalled_folder(), requested_signal)
    status = 0
    try:
        try:
            if not distributed:
                main(cfg, **kwargs)
            else:
                cfg.distributed_training.distributed_rank = first_rank + index
                distributed_utils.distributed_main(index, main, cfg, kwargs)
        except (RuntimeError, OSError) as err:
            # one line instead of fairseq's words (its command-line flag) or a save's traceback
            plain = dataloader_mismatch(err, cfg) or disk_full(err, cfg)
            if plain is None:
                raise
            raise plain from None
    except LAUNCH_REFUSALS as refusal:
        if not spawned:
            raise  # the launcher in this process reports it (processes.call_main)
        logger.error("%s", refusal)
        status = LAUNCH_REFUSED_EXIT_STATUS
    finally:
        _close_training()
    if spawned:
        exit_now(status)


def _close_training() -> None:
    """Stop the watchdog and close what fairseq leaves running."""
    watchdog.stop()  # training is over: the teardown below is not an update
    # Threads left running at interpreter exit (a prefetch thread, the process
    # group's) abort the process; fairseq leaves both.
    close_all_batch_iterators()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def fork_data_workers() -> None:
    """DataLoader workers of a spawned rank start by fork, as in a rank that torchrun or SLURM started.

    A process started by ``spawn`` inherits that start method for its own
    children, so each epoch's DataLoader workers (fairseq builds a loader per
    epoch) would be spawned too: a fresh interpreter that imports torch and
    fairseq before its first clip (seconds per epoch, which on a small set
    such as ESC-50 is a large share of an epoch), and that a Ctrl-C during the
    import kills. Workers only decode audio and compute features on the CPU,
    which is what fork is safe for. Linux only (fork is unsafe on macOS).
    """
    import multiprocessing

    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)


def exit_now(status: int) -> None:
    """Flush logs and standard streams, then end the process without interpreter teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
