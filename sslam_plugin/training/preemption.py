"""Stop at the next update with a checkpoint when the cluster says the job must end.

SLURM announces a time limit with the signal submitit configures (SIGUSR2 by
default, ``SUBMITIT_PREEMPT_SIGNAL``) and a preemption with SIGTERM, shortly
before it kills the job. Each training process records the first such signal;
after every update all ranks agree (one all-reduce) on whether any of them got
one, and if so they save a checkpoint at that update and leave training, so a
requeued job loses at most one update. Without this, fairseq would die at the
signal and lose everything since its last periodic checkpoint.

Ctrl-C (SIGINT) stops the same way: the first press saves a checkpoint after
the current update and stops (exit status 75: the same command resumes); a
second press stops at once, without saving. Before the first update of a
launch there is nothing to save (and a checkpoint at update 1 would become the
run's resume point), so a Ctrl-C then stops at once. A terminal sends SIGINT to every
process of the job and the launcher forwards it too, so presses closer than
``INTERRUPT_REPEAT_S`` count as one. Once the stop's checkpoint is saved, a further
Ctrl-C is ignored: the run ends with exit status 75 all the same. The launcher of
spawned ranks never stops on a Ctrl-C itself (:func:`record_launcher_interrupt`): it
passes each press on and ends with its ranks' status, 75 once they saved. A stop signal
during start-up, before training (after hydra started the plugin's launcher),
ends the launch at once with exit status 75 and a log line
(:func:`stop_during_start_up`).

A stop signal never waits for ever: when no update finishes within
:data:`.watchdog.STOP_GRACE_S` of it (a frozen peer blocks every rank), the
rank's watchdog ends it with exit status 75 (:mod:`.watchdog`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

import torch

from . import watchdog

__all__ = [
    "RESUMABLE_EXIT_STATUS",
    "STOP_SIGNALS",
    "record_signal",
    "record_interrupt",
    "record_launcher_interrupt",
    "interrupted_again",
    "INTERRUPT_REPEAT_S",
    "stop_on_signals",
    "stop_during_start_up",
    "stop_before_training",
    "stop_requested",
    "requested_signal",
    "validate_and_save",
]

logger = logging.getLogger(__name__)


def _stop_signals() -> Tuple[signal.Signals, ...]:
    names = ["SIGTERM", "SIGUSR1", "SIGUSR2"]
    submitit = os.environ.get("SUBMITIT_PREEMPT_SIGNAL")
    if submitit:
        names.append(submitit if submitit.startswith("SIG") else "SIG" + submitit)
    return tuple(dict.fromkeys(getattr(signal, n) for n in names if hasattr(signal, n)))


STOP_SIGNALS = _stop_signals()
RESUMABLE_EXIT_STATUS = 75  # sysexits.h EX_TEMPFAIL

_requested: Optional[str] = None
_first_interrupt: Optional[float] = None
_training = False  # this process finished an update of this launch (validate_and_save ran)
_saved = False  # this process saved the checkpoint of a requested stop
_interrupted_again = False  # the launcher got a second Ctrl-C (the ranks stop at once unless saved)
INTERRUPT_REPEAT_S = 0.5  # SIGINTs closer than this are one Ctrl-C (the terminal's and the launcher's copy)


def requested_signal() -> Optional[str]:
    """Name of the stop signal this process received, if any."""
    return _requested


def record_signal(signum: int, frame: Any = None) -> None:
    """Signal handler: remember the first stop signal."""
    global _requested
    if _requested is None:
        _requested = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint and stopping after the current update", _requested)


def record_launcher_interrupt(signum: int = signal.SIGINT, frame: Any = None) -> None:
    """SIGINT in the launcher of spawned ranks, which trains nothing itself: the ranks decide.

    It has passed the press on already; the first is recorded (the launcher
    then ends with exit status 75 once the ranks saved), a later one only noted
    (:func:`interrupted_again`): the launcher goes on waiting for its ranks, so
    a Ctrl-C after their save cannot end it by SIGINT instead of 75.
    """
    global _requested, _first_interrupt, _interrupted_again
    now = time.monotonic()
    if _first_interrupt is not None and now - _first_interrupt < INTERRUPT_REPEAT_S:
        return  # the same press, delivered twice (by the terminal and by the launcher)
    if _requested is None:
        _requested, _first_interrupt = "SIGINT", now
        logger.warning("Ctrl-C: the ranks save a checkpoint after the current update and stop "
                       "(Ctrl-C again to stop them at once, without saving)")
        return
    _interrupted_again, _first_interrupt = True, now
    logger.warning("Ctrl-C again: the ranks stop at once unless their checkpoint is saved already; "
                   "waiting for them to end")


def interrupted_again() -> bool:
    """Whether the launcher got a second Ctrl-C (:func:`record_launcher_interrupt`)."""
    return _interrupted_again


def record_interrupt(signum: int = signal.SIGINT, frame: Any = None) -> None:
    """SIGINT handler of a training process: the first Ctrl-C stops after the current update with a
    checkpoint, the next at once."""
    global _requested, _first_interrupt
    now = time.monotonic()
    if _first_interrupt is not None and now - _first_interrupt < INTERRUPT_REPEAT_S:
        return  # the same press, delivered twice (by the terminal and by the launcher)
    if _saved:
        # Stopping "at once" now would only cut the few lines of teardown left, and end the
        # process by SIGINT instead of the resumable status of a run whose checkpoint is saved.
        logger.warning("Ctrl-C again: the checkpoint is saved already, the run is ending (exit status %d: the "
                       "same command resumes)", RESUMABLE_EXIT_STATUS)
        return
    if _requested is None and not _training:
        logger.warning("Ctrl-C before the first update: stopping now, there is nothing to save yet")
    elif _requested is None:
        _requested, _first_interrupt = "SIGINT", now
        logger.warning(
            "Ctrl-C: saving a checkpoint after the current update and stopping "
            "(Ctrl-C again to stop at once, without saving)"
        )
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise KeyboardInterrupt


def stop_before_training(signum: int, frame: Any = None) -> None:
    """Handler while the launch starts up: nothing to save yet, so stop now, resumable."""
    logger.warning(
        "%s during start-up, before training: stopping now, there is nothing to save yet (exit status %d: the "
        "same command resumes)", signal.Signals(signum).name, RESUMABLE_EXIT_STATUS,
    )
    raise SystemExit(RESUMABLE_EXIT_STATUS)


def stop_during_start_up() -> None:
    """Until :func:`stop_on_signals` takes over, a stop signal ends the launch with exit status 75 and a log line.

    Without it a scheduler's SIGUSR2 or SIGTERM during start-up (config, checkpoint
    choice, model building) killed the process silently (exit status 128 + signal),
    which a requeue script does not read as "resumable".
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop_before_training)


def stop_on_signals() -> None:
    """Record the stop signals in this process instead of dying on them (main thread only).

    SIGINT is left alone where it is ignored (a job started with ``nohup ... &``).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, record_signal)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, record_interrupt)


def stop_requested(trainer: Any) -> bool:
    """Whether any data-parallel rank received a stop signal (a collective: every rank calls it)."""
    local = _requested is not None
    if trainer.data_parallel_world_size == 1:
        return local
    from fairseq.distributed import utils as distributed_utils

    flag = torch.tensor([float(local)], device=trainer.device)
    distributed_utils.all_reduce(flag, group=trainer.data_parallel_process_group, op="max")
    return bool(flag.item())


def validate_and_save(
    fairseq_validate_and_save: Callable[..., Any], cfg, trainer, task, epoch_itr, valid_subsets: List[str],
    end_of_epoch: bool,
):
    """fairseq's end-of-update step (validate, save, decide to stop), plus stopping on a signal.

    ``fairseq_validate_and_save``: fairseq's own step, run when no stop is requested
    (the adapter passes it: :mod:`.fairseq_adapter`).
    """
    from fairseq import checkpoint_utils

    global _training, _saved
    _training = True
    watchdog.progress(trainer.get_num_updates())
    # The all-reduce in stop_requested is watched: a frozen peer blocks it.
    if not stop_requested(trainer):
        with watchdog.paused():  # validation and saving may take long
            return fairseq_validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch)
    update = trainer.get_num_updates()
    logger.warning("stopping at update %d on %s: saving a checkpoint to resume from", update, _requested or "a peer's signal")
    with watchdog.paused():
        checkpoint_utils.save_checkpoint(cfg.checkpoint, trainer, epoch_itr, None)
    _saved = True  # a further Ctrl-C changes nothing now (record_interrupt)
    if threading.current_thread() is threading.main_thread():
        # Python resets its own handlers to the default while the interpreter shuts down, so a
        # Ctrl-C then would end the run by SIGINT instead of exit status 75; an ignored one stays ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logger.warning(
        "stopped at update %d; launching the same command again resumes from %s",
        update,
        os.path.join(cfg.checkpoint.save_dir, f"checkpoint_last{cfg.checkpoint.checkpoint_suffix}.pt"),
    )
    return [None], True
