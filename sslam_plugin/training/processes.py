"""Starting the training processes and waiting for them: fairseq's ``call_main`` for this plugin.

``fairseq-hydra-train`` hands the composed config to fairseq's ``call_main``,
which assumes one CUDA device per process: on CPU it refuses
``distributed_world_size=2`` ("0 available devices"), divides by the CUDA
device count under torchrun, and spawns min(#GPUs, world size) processes. The
fairseq adapter puts :func:`call_main` in its place (:mod:`.fairseq_adapter`).

Every process count uses the same path (:mod:`.topology`). Before any process
starts, the process that owns the run takes the run folder's lock
(:mod:`.run_ownership`), and :func:`.run_setup.prepare_run` checks the launch
settings, chooses the checkpoint and compares a relaunch with it; a refusal is
one log line and exit status :data:`.launch_refusals.LAUNCH_REFUSED_EXIT_STATUS`.
Processes this launcher spawns fork their DataLoader workers and, on the CPU,
share the machine's threads (:func:`.launch_options.share_cpu_threads`).

Ranks die with their launcher (:func:`.rank.die_with_launcher`); under torchrun
and SLURM the ranks are the scheduler's children, and ending the step kills
all of them. A frozen rank does not hang the job: every rank runs a watchdog
(:mod:`.watchdog`, ``SSLAM_WATCHDOG_TIMEOUT_S``, checked before any process
starts) that writes its stack to ``<run folder>/stalled/`` and ends it with exit
status 76; this launcher then names the frozen rank, kills it, and ends with
the same status (:func:`join_ranks`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from . import watchdog
from .launch_options import share_cpu_threads
from .launch_refusals import LAUNCH_REFUSALS, LAUNCH_REFUSED_EXIT_STATUS
from .preemption import (
    RESUMABLE_EXIT_STATUS, STOP_SIGNALS, interrupted_again, record_launcher_interrupt, record_signal, requested_signal,
)
from .rank import run_rank
from .run_ownership import owning_the_run
from .run_setup import drop_failing_log_files, prepare_run
from .topology import infer_topology, use_cpu

__all__ = ["call_main", "join_ranks"]

logger = logging.getLogger(__name__)


def call_main(
    cfg: Any,
    main: Callable[..., Any],
    fairseq_call_main: Callable[..., Any],
    rank_setup: Optional[Callable[[], None]] = None,
    **kwargs: Any,
) -> Any:
    """Start this launch's ranks and run them to their end (see the module docstring).

    Args:
        cfg: the whole config; ``main``: fairseq's training function, ``kwargs`` its arguments.
        fairseq_call_main: fairseq's own ``call_main``, for the set-ups it keeps
            (TPU, model or pipeline parallelism, a user-chosen ``distributed_init_method``).
        rank_setup: run first in every rank (picklable: spawned ranks receive it).

    Raises:
        SystemExit: 78 after a refusal's one line; 75 after a stop signal, with a checkpoint saved.
    """
    drop_failing_log_files()  # hydra's log file is in place by now
    try:
        with owning_the_run(cfg):
            result = _start_processes(cfg, main, fairseq_call_main, rank_setup, **kwargs)
    except LAUNCH_REFUSALS as err:  # a bad checkpoint or setting: the message says it all
        logger.error("%s", err)
        raise SystemExit(LAUNCH_REFUSED_EXIT_STATUS) from None
    if requested_signal() is not None:
        logger.warning(
            "stopped on %s with a checkpoint in %s; exit status %d: the same command resumes the run",
            requested_signal(),
            cfg.checkpoint.save_dir,
            RESUMABLE_EXIT_STATUS,
        )
        raise SystemExit(RESUMABLE_EXIT_STATUS)
    return result


def _set_up_then_train(rank_setup: Callable[[], None], main: Callable[..., Any], cfg: Any, **kwargs: Any) -> Any:
    """``main`` in a rank that fairseq's own ``call_main`` started."""
    rank_setup()
    return main(cfg, **kwargs)


def _start_processes(
    cfg: Any, main: Callable[..., Any], fairseq_call_main: Callable[..., Any],
    rank_setup: Optional[Callable[[], None]], **kwargs: Any,
) -> Any:
    """Check the settings and choose the checkpoint, then run this launcher's ranks to their end."""
    dist_cfg = cfg.distributed_training
    if (
        cfg.common.tpu
        or dist_cfg.pipeline_model_parallel
        or cfg.common.model_parallel_size > 1
        or dist_cfg.distributed_init_method is not None  # the user chose how processes meet
    ):
        if not prepare_run(cfg, dist_cfg.distributed_world_size):
            return None
        if rank_setup is not None:  # fairseq may spawn its ranks: each sets itself up first
            main = functools.partial(_set_up_then_train, rank_setup, main)
        return fairseq_call_main(cfg, main, **kwargs)
    cpu = use_cpu(cfg)
    topology = infer_topology(
        dist_cfg.distributed_world_size,
        cpu,
        dist_cfg.distributed_backend,
        dist_cfg.distributed_port,
        os.environ,
        0 if cpu else torch.cuda.device_count(),
    )
    timeout = watchdog.timeout_from_env()  # a bad value is refused before any process starts
    if (dist_cfg.get("heartbeat_timeout") or -1) > 0:
        logger.warning("distributed_training.heartbeat_timeout is fairseq's timer of forward calls, which a frozen "
                       "rank does not end here; the plugin's watchdog takes %s=SECONDS (now %g, 0: off)",
                       watchdog.TIMEOUT_ENV, timeout)
    if not prepare_run(cfg, topology.world_size):
        return None
    dist_cfg.distributed_world_size = topology.world_size
    dist_cfg.distributed_backend = topology.backend
    dist_cfg.distributed_init_method = topology.init_method
    dist_cfg.distributed_no_spawn = not topology.spawn
    if topology.world_size > 1:
        first = topology.first_rank + (0 if topology.spawn else topology.local_index)
        logger.info(
            "data parallel: %d processes (%s, %s), ranks %d-%d here",
            topology.world_size,
            topology.backend,
            topology.init_method,
            first,
            first + topology.local_processes - 1,
        )
    if topology.spawn and cpu:
        share_cpu_threads(topology.local_processes)
    if not topology.spawn:
        run_rank(topology.local_index, main, cfg, kwargs, topology.first_rank, rank_setup=rank_setup)
        return None
    context = torch.multiprocessing.start_processes(
        run_rank,
        args=(main, cfg, kwargs, topology.first_rank, True, os.getpid(), rank_setup),
        nprocs=topology.local_processes,
        join=False,
        start_method="spawn",
    )
    with _forward_stop_signals(lambda: [p.pid for p in context.processes if p.is_alive()]):
        join_ranks(context, topology.first_rank)
    return None


@contextlib.contextmanager
def _forward_stop_signals(pids: Callable[[], List[int]]) -> Iterator[None]:
    """While the ranks run, pass a stop signal sent to this launcher on to them.

    After a stop was asked for, a further Ctrl-C stays ignored here (the ranks
    have it): the launcher ends with their status, not by SIGINT.
    """

    def forward(signum: int, frame: Any) -> None:
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if signum == signal.SIGINT:
            record_launcher_interrupt(signum)
        else:
            record_signal(signum)

    previous: Dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, forward)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, forward)
    try:
        yield
    finally:
        stopping = requested_signal() is not None
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if stopping and sig == signal.SIGINT else handler)


RANK_END_GRACE_S = 10.0  # when a rank ended the job: the others' time to end themselves, then SIGTERM's


def join_ranks(context: Any, first_rank: int) -> None:
    """Wait for the spawned ranks; one ended by its watchdog (or a stop it could not honour) ends them all.

    torch's ``join`` would SIGTERM the others and wait 30 s for each frozen
    one; here the frozen ranks are named and killed first, and the launcher
    exits with the rank's status (76: stalled, 75: resumable stop, 78: a
    refusal the rank logged, such as a full disk).

    Raises:
        SystemExit: with :data:`.watchdog.WATCHDOG_EXIT_STATUS`, 75 or 78 as above.
        KeyboardInterrupt: the ranks failed after a second Ctrl-C (stopped at once, without saving).
    """
    from multiprocessing.connection import wait

    from torch.multiprocessing.spawn import ProcessException

    processes = context.processes
    ends_the_job = (watchdog.WATCHDOG_EXIT_STATUS, LAUNCH_REFUSED_EXIT_STATUS, RESUMABLE_EXIT_STATUS)
    while True:
        # Look before waiting: a rank that ended the job already (before this call, or while the
        # loop went round) is no longer among those waited on, and the wait would outlast the others.
        codes = {first_rank + i: p.exitcode for i, p in enumerate(processes)}
        status = next((s for s in ends_the_job if s in codes.values()), None)  # 76, then 78, then 75
        if status is None:
            try:
                if context.join(timeout=0):
                    return
                running = {p.sentinel: p for p in processes if p.exitcode is None}
                for sentinel in wait(list(running)) if running else []:  # until any rank ends
                    running[sentinel].join()  # its sentinel closes a moment before its exit status is there
                continue
            except torch.multiprocessing.ProcessExitedException as err:
                if err.exit_code not in ends_the_job:  # a rank that failed otherwise: torch's report
                    _stopped_at_once()
                    raise
                status = err.exit_code  # ended between the look above and join's
            except ProcessException:
                _stopped_at_once()
                raise
        pids = {first_rank + i: p.pid for i, p in enumerate(processes)}
        if status != RESUMABLE_EXIT_STATUS:
            if status == watchdog.WATCHDOG_EXIT_STATUS:
                watchdog.report_stalled_ranks(pids, codes, watchdog.stalled_folder(), status)  # kills the frozen ones
            else:
                logger.error("rank(s) %s stopped (the reason is logged above); ending the others",
                             ", ".join(str(r) for r, c in codes.items() if c == status))
            end_ranks(processes, grace_s=RANK_END_GRACE_S)  # their watchdogs end them too; then SIGTERM, SIGKILL
            raise SystemExit(status)
        # A resumable stop: the other ranks stop too, and one may still be writing the stop's
        # checkpoint (minutes for a large model on a slow file system), so they are waited for,
        # never cut short. Only a rank frozen by a signal would never end: it is killed.
        logger.warning("a rank stopped with status %d (resumable): waiting for the others to stop", status)
        frozen = {r: pid for r, pid in pids.items()
                  if codes[r] is None and watchdog.process_state(pid) in watchdog.FROZEN_STATES}
        if frozen:
            watchdog.report_stalled_ranks(frozen, codes, watchdog.stalled_folder(), status)
        for process in processes:
            process.join()
        raise SystemExit(status)


def end_ranks(processes: List[Any], grace_s: float) -> None:
    """Give the ranks still running ``grace_s`` seconds to end, then SIGTERM, then SIGKILL, ``grace_s`` apart.

    Polls each process's exit status (``waitpid`` without blocking) instead of torch's ``join``,
    which waits on the processes' pipes and then blocks in ``waitpid`` until a rank ends on its
    own: a rank left waiting in a collective would keep the job for as long as that wait lasts.
    """
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        running = [p for p in processes if p.is_alive()]
        if not running:
            return
        if sig is not None:
            logger.warning("ending rank process(es) %s with %s", [p.pid for p in running], sig.name)
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)
        deadline = time.monotonic() + grace_s
        while any(p.is_alive() for p in running) and time.monotonic() < deadline:
            time.sleep(0.05)


def _stopped_at_once() -> None:
    """A second Ctrl-C stopped the ranks without saving: the launcher ends as interrupted, too."""
    if interrupted_again():
        logger.warning("stopped at once on a second Ctrl-C, without saving: the last saved checkpoint resumes")
        raise KeyboardInterrupt
