"""One job owns a run folder: the process that starts global rank 0 holds the folder's lock.

That process (this launcher for local processes and for SLURM's first node,
rank 0 under torchrun or with one SLURM task per device:
:func:`.topology.owns_the_run`) takes the folder's lock (:mod:`.run_lock`) when
hydra starts the run, before hydra writes into the folder, so the checkpoint
choice and every save happen under it, and holds it until its ranks have
ended. The job's other processes never touch the lock: they cannot wait for it
(rank 0 holds it for the whole run, and waits for them), and they save no
checkpoint. A second launch is refused at once (exit status
:data:`RUN_IN_USE_EXIT_STATUS`); its other processes, under torchrun or SLURM,
end when the scheduler ends the failed step (torchrun at once; ``srun`` at
once with ``--kill-on-bad-exit=1``, otherwise when their rendezvous with the
refused rank 0 times out), having trained nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

from . import run_lock
from .topology import owns_the_run

__all__ = ["RUN_IN_USE_EXIT_STATUS", "run_lock_folder", "take_run_lock", "release_run_lock", "owning_the_run"]

logger = logging.getLogger(__name__)

RUN_IN_USE_EXIT_STATUS = 73  # sysexits.h EX_CANTCREAT: another launch owns the run folder
RUN_IN_USE_ADVICE = (
    "wait for it to end (a launch that crashed or was killed frees the folder at once), "
    "or start this one in another folder with hydra.run.dir=..."
)

_run_lock: Optional[run_lock.RunLock] = None  # the run folder lock this process holds


def run_lock_folder(run_dir: str, save_dir: str) -> str:
    """The folder whose lock guards a run: the run folder, or the checkpoint folder when it lies outside it."""
    run_dir, save_dir = os.path.abspath(run_dir), os.path.abspath(save_dir)
    return run_dir if os.path.commonpath([run_dir, save_dir]) == run_dir else save_dir


def take_run_lock(folder: str) -> None:
    """Hold ``folder``'s run lock in this process (kept if held already); a refusal ends the launch.

    Raises:
        SystemExit: with :data:`RUN_IN_USE_EXIT_STATUS`, after logging the one-line refusal.
    """
    global _run_lock
    if _run_lock is not None and _run_lock.held:
        return
    try:
        _run_lock = run_lock.acquire(folder, advice=RUN_IN_USE_ADVICE)
    except run_lock.RunFolderInUse as err:
        logger.error("%s", err)
        raise SystemExit(RUN_IN_USE_EXIT_STATUS) from None
    if _run_lock.held:
        logger.info("this launch owns the run folder %s (%s)", folder, _run_lock.path)


def release_run_lock() -> None:
    """Free the run folder (idempotent); after the ranks have ended."""
    global _run_lock
    if _run_lock is not None:
        _run_lock.release()
        _run_lock = None


@contextlib.contextmanager
def owning_the_run(cfg: Any) -> Iterator[None]:
    """Hold the run lock (if this process owns the run) from the checkpoint choice until the ranks end."""
    if owns_the_run(os.environ, cfg.distributed_training.get("distributed_rank")):
        take_run_lock(run_lock_folder(os.getcwd(), cfg.checkpoint.save_dir))  # hydra runs in the run folder
    try:
        yield
    finally:
        release_run_lock()
