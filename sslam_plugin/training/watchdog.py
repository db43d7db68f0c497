"""A watchdog per training process: a rank that stops making progress ends the job, with its stack.

A data-parallel job is as fast as its slowest rank: when one rank freezes (a
hung NCCL collective, a deadlocked data loader, a node's NFS stall, a
``SIGSTOP``), every other rank waits for it in the next collective, for ever,
and on a cluster the job burns its allocation until the time limit. fairseq's
``distributed_training.heartbeat_timeout`` does not help here: it only watches
``forward`` calls (so a long validation trips it), and signals ``SIGINT``,
which the plugin takes as a Ctrl-C (:mod:`.preemption`).

Each training process therefore runs a :class:`Watchdog` thread. The training
loop reports progress after every update (:func:`progress`, from the plugin's
``validate_and_save``) and pauses the watchdog while it validates and saves
(:func:`paused`), which may legitimately take long. When a rank has made no
progress for the timeout (``SSLAM_WATCHDOG_TIMEOUT_S``, default
:data:`DEFAULT_TIMEOUT_S`; 0 turns it off; counted from the first update on,
so model and data loading before it never trip it), the watchdog

* writes every thread's Python stack of this rank to
  ``<run folder>/stalled/rank<R>.txt``,
* logs one line naming the rank, the last update and that file,
* and ends the process with :data:`WATCHDOG_EXIT_STATUS` (76), so the
  launcher, torchrun or ``srun`` ends the job and SLURM can requeue it.

Time during which the whole process was suspended (``scontrol suspend``, a
``SIGSTOP`` of the job's process group) does not count: the watchdog thread
was frozen too, and notices the gap.

A rank blocked in a collective because another rank froze makes no progress
either: every healthy rank times out and writes where it waits. A frozen rank
(``SIGSTOP``) can run nothing; the launcher that spawned the ranks names it
(:func:`report_stalled_ranks`: its ``/proc`` state) and kills it.

Stop signals while a rank waits: a stop signal (:mod:`.preemption`) is acted
upon after the next update. If no update finishes within
:data:`STOP_GRACE_S` of the signal (or of the end of validation or saving),
the rank cannot make progress and the cluster is about to kill it: the
watchdog writes its stack and ends it with the resumable status 75 (the last
checkpoint resumes the run), instead of letting the signal go unanswered.

Plain Python (no fairseq): :mod:`.launch` starts it, :mod:`.preemption`
feeds it.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Mapping, Optional

__all__ = [
    "WATCHDOG_EXIT_STATUS",
    "TIMEOUT_ENV",
    "DEFAULT_TIMEOUT_S",
    "STOP_GRACE_S",
    "STALLED_FOLDER",
    "Watchdog",
    "timeout_from_env",
    "stalled_folder",
    "start",
    "stop",
    "progress",
    "paused",
    "process_state",
    "report_stalled_ranks",
]

logger = logging.getLogger(__name__)

WATCHDOG_EXIT_STATUS = 76  # sysexits.h EX_PROTOCOL; distinct from 75 (resumable stop) and 73 (run folder in use)
RESUMABLE_EXIT_STATUS = 75  # the same value as preemption.RESUMABLE_EXIT_STATUS (which imports torch)
TIMEOUT_ENV = "SSLAM_WATCHDOG_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0  # generous: an update of any recipe takes seconds; validation and saving do not count
STOP_GRACE_S = 60.0  # SLURM's warning signals come a minute or more before the kill
STALLED_FOLDER = "stalled"
EXIT_FLUSH_S = 10.0  # the longest the watchdog waits for the logs to flush before it ends the process
WHAT_TO_DO = (
    "the job is ended so the scheduler can requeue it: the same command resumes from the last checkpoint; "
    "if it stalls again at the same place, read the stacks"
)

_active: Optional["Watchdog"] = None  # this process's watchdog, fed by progress() and paused()


def timeout_from_env(environ: Optional[Mapping[str, str]] = None) -> float:
    """The watchdog timeout in seconds from ``SSLAM_WATCHDOG_TIMEOUT_S`` (0: off).

    Raises:
        ValueError: naming the variable, for a value that is not a number >= 0.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected seconds >= 0 (0 turns the watchdog off)")
    return value


def stalled_folder(run_dir: Optional[str] = None) -> str:
    """Where the stacks of stalled ranks go: ``<run folder>/stalled`` (hydra runs in the run folder)."""
    return os.path.join(os.path.abspath(run_dir or os.getcwd()), STALLED_FOLDER)


def _utc(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).isoformat(timespec="seconds")


def _exit_process(status: int) -> None:
    """Flush the logs and end the process at once, from any thread.

    The main thread may be blocked inside a collective, so the interpreter
    cannot be shut down normally; a timer ends the process anyway should a
    log handler's lock never come free.
    """
    killer = threading.Timer(EXIT_FLUSH_S, os._exit, args=(status,))
    killer.daemon = True
    killer.start()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


class Watchdog:
    """Ends this process when it makes no progress for ``timeout_s`` seconds (see the module docstring).

    Args:
        rank: this process's global rank (names the stack file and the log line).
        timeout_s: seconds without progress, outside pauses, after the first update (> 0).
        folder: where the stack file goes (created when needed).
        stop_requested: returns the name of a stop signal this process received, or None.
        stop_grace_s: seconds a requested stop may wait for the next update.
        exit: ends the process with a status (replaced in tests).
        interval_s: how often the thread looks (default: a tenth of the timeout, at most 5 s).
    """

    def __init__(
        self,
        rank: int,
        timeout_s: float,
        folder: str,
        stop_requested: Callable[[], Optional[str]] = lambda: None,
        stop_grace_s: float = STOP_GRACE_S,
        exit: Callable[[int], None] = _exit_process,
        interval_s: Optional[float] = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"watchdog timeout must be > 0 seconds, got {timeout_s}")
        self.rank = rank
        self.timeout_s = float(timeout_s)
        self.folder = folder
        self.stop_grace_s = min(float(stop_grace_s), self.timeout_s)
        self.interval_s = interval_s if interval_s is not None else max(0.05, min(5.0, self.timeout_s / 10))
        self._stop_requested = stop_requested
        self._exit = exit
        self._lock = threading.Lock()
        self._updates: Optional[int] = None  # None until the first update: the stall clock starts there
        self._last_progress = time.monotonic()
        self._last_progress_wall = time.time()
        self._pauses = 0
        self._signal_seen: Optional[float] = None  # when this thread first saw the stop request
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"sslam-watchdog-rank{rank}", daemon=True)

    # ----------------------------------------------------------------- fed by the training loop
    def progress(self, updates: int) -> None:
        """An update finished; ``updates`` is the run's update count."""
        with self._lock:
            self._updates = int(updates)
            self._last_progress, self._last_progress_wall = time.monotonic(), time.time()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No stall is counted inside (validation, saving); the clock restarts when it ends."""
        with self._lock:
            self._pauses += 1
        try:
            yield
        finally:
            with self._lock:
                self._pauses -= 1
                self._last_progress, self._last_progress_wall = time.monotonic(), time.time()

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread (idempotent); training is over."""
        self._ended.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 1)

    # ----------------------------------------------------------------------- the thread
    def _watch(self) -> None:
        looked = time.monotonic()
        while not self._ended.wait(self.interval_s):
            now = time.monotonic()
            missed = now - looked - self.interval_s
            looked = now
            with self._lock:
                if missed > max(1.0, self.interval_s):
                    # This thread did not run either: the whole process (or machine) was suspended
                    # (scontrol suspend, a SIGSTOP of the job, a laptop's sleep), which is no stall.
                    self._last_progress += missed
                if self._pauses:
                    continue
                updates, last = self._updates, self._last_progress
            requested = self._stop_requested()
            if requested is not None and self._signal_seen is None:
                self._signal_seen = now
            if requested is not None and now - max(self._signal_seen, last) >= self.stop_grace_s:
                self._fire(
                    RESUMABLE_EXIT_STATUS,
                    f"{requested} received, but no update finished in the {self.stop_grace_s:.0f} s since: "
                    "stopping without a new checkpoint (the last one resumes the run)",
                )
                return
            if updates is not None and now - last >= self.timeout_s:
                self._fire(WATCHDOG_EXIT_STATUS, f"no progress for {now - last:.0f} s")
                return

    def _fire(self, status: int, why: str) -> None:
        if self._ended.is_set():
            return  # training ended while this thread looked
        with self._lock:
            updates, since = self._updates, self._last_progress_wall
        where = "before the first update" if updates is None else f"after update {updates}"
        path = self._dump(f"{why}; last progress {where} at {_utc(since)}")
        logger.error(
            "watchdog: rank %d (pid %d, %s) stalled %s (%s, since %s): its Python stack is in %s; "
            "exiting with status %d: %s",
            self.rank, os.getpid(), socket.gethostname(), where, why, _utc(since), path or "(not written)",
            status, WHAT_TO_DO if status == WATCHDOG_EXIT_STATUS else "run the same command again to resume",
        )
        self._exit(status)

    def _dump(self, header: str) -> Optional[str]:
        """Write every thread's Python stack to ``<folder>/rank<R>.txt``; the path, or None on failure."""
        path = os.path.join(self.folder, f"rank{self.rank}.txt")
        try:
            os.makedirs(self.folder, exist_ok=True)
            with open(path, "w") as handle:
                handle.write(
                    f"rank {self.rank}, pid {os.getpid()}, host {socket.gethostname()}, at {_utc(time.time())}\n"
                    f"{header}\n\n"
                )
                handle.flush()  # faulthandler writes to the descriptor directly
                faulthandler.dump_traceback(handle, all_threads=True)
        except OSError as err:
            logger.error("watchdog: cannot write the stack of rank %d to %s: %s", self.rank, path, err)
            return None
        return path


# --------------------------------------------------------------------- this process's watchdog
def start(
    rank: int, folder: str, stop_requested: Callable[[], Optional[str]], timeout_s: Optional[float] = None
) -> None:
    """Start this process's watchdog (timeout from the environment unless given; 0: none)."""
    global _active
    stop()
    timeout_s = timeout_from_env() if timeout_s is None else timeout_s
    if timeout_s > 0:
        _active = Watchdog(rank, timeout_s, folder, stop_requested=stop_requested).start()


def stop() -> None:
    """Stop this process's watchdog, if any."""
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def progress(updates: int) -> None:
    """Report a finished update to this process's watchdog (nothing without one)."""
    if _active is not None:
        _active.progress(updates)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Validation or saving: not counted as a stall by this process's watchdog."""
    watchdog = _active
    if watchdog is None:
        yield
        return
    with watchdog.paused():
        yield


# ------------------------------------------------------------------- the launcher's side
def process_state(pid: int) -> Optional[str]:
    """The state letter of ``/proc/<pid>/stat`` (``T``: stopped, ``D``: in the kernel, ``Z``: ended); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


FROZEN_STATES = {"T": "stopped by a signal (SIGSTOP or job control)", "t": "stopped by a debugger"}


def report_stalled_ranks(
    pids: Dict[int, int], exit_codes: Dict[int, Optional[int]], folder: str, status: int = WATCHDOG_EXIT_STATUS
) -> List[int]:
    """After a rank's watchdog ended it: log which ranks stalled, and kill the frozen ones.

    Args:
        pids: {global rank: pid} of the ranks this launcher spawned.
        exit_codes: {global rank: exit status, or None while it runs}.
        folder: the stalled folder the ranks' watchdogs write into.
        status: the job's exit status: 76 (a stall), or 75 (a stop signal no update could honour).

    Returns:
        the ranks found stopped (state ``T`` or ``t``), now sent ``SIGKILL``; the caller ends the others.
    """
    frozen: List[int] = []
    for rank in sorted(pids):
        code, state = exit_codes.get(rank), process_state(pids[rank])
        if code is None and state in FROZEN_STATES:
            frozen.append(rank)
            logger.error("watchdog: rank %d (pid %d) is %s (state %s): it stalled the job; killing it",
                         rank, pids[rank], FROZEN_STATES[state], state)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[rank], signal.SIGKILL)  # a stopped process acts on no other signal
        elif code is None and state == "D":  # often a moment's disk I/O; for long, a hung file system
            logger.error("watchdog: rank %d (pid %d) is in uninterruptible I/O (state D): a hung file system "
                         "would stall the job", rank, pids[rank])
        elif code == WATCHDOG_EXIT_STATUS:
            logger.error("watchdog: rank %d (pid %d) made no progress; its stack: %s",
                         rank, pids[rank], os.path.join(folder, f"rank{rank}.txt"))
    if frozen:
        logger.error("watchdog: stalled rank(s) %s; the other ranks waited for them (stacks in %s); exit status %d: %s",
                     ", ".join(map(str, frozen)), folder, status, WHAT_TO_DO)
    elif status == WATCHDOG_EXIT_STATUS:
        logger.error("watchdog: the job made no progress (stacks in %s: the rank that stalled is the one not "
                     "waiting in a collective); exit status %d: %s", folder, WATCHDOG_EXIT_STATUS, WHAT_TO_DO)
    return frozen
