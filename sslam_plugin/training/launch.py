"""Starting the training processes: one, N local ones, torchrun's, or SLURM's.

``fairseq-hydra-train`` hands the composed config to fairseq's ``call_main``,
which assumes one CUDA device per process: on CPU it refuses
``distributed_world_size=2`` ("0 available devices"), divides by the CUDA
device count under torchrun, and spawns min(#GPUs, world size) processes.
:func:`call_main` replaces it (see :mod:`.fairseq_compat`); the recipes load
it through a hydra callback, ``hydra.callbacks.sslam_launch``, before fairseq
starts anything:

    hydra:
      callbacks:
        sslam_launch:
          _target_: sslam_plugin.training.launch.LaunchCallback

Where the processes come from (:func:`infer_topology`):

* ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): one
  process per rank, already started.
* SLURM with several tasks or nodes: one task per device (``SLURM_PROCID``,
  ``SLURM_LOCALID``), or one task per node that starts one process per device
  (the GPUs it sees; on CPU ``distributed_world_size / nodes``). The master is
  ``MASTER_ADDR`` or the job's first node; the port ``distributed_port``, or one
  derived from the job id, the same on every node.
* otherwise this machine: ``distributed_world_size`` processes (default: the
  visible GPUs; on CPU with ``common.cpu=true``, as many as asked).

Every process count uses the same path: CPU processes talk over gloo, GPUs
over NCCL. Before any process starts, :func:`prepare_run` chooses the
checkpoint to start from (:mod:`.resume`) and derives ``update_freq`` from
``task.effective_batch_size`` and the world size, so a recipe keeps its clips
per update on 1, 2, 4 or 8 GPUs; a run already at ``max_update`` ends there.
Processes this launcher spawns fork their DataLoader workers
(:func:`fork_data_workers`) and, on the CPU, share the machine's threads
(:func:`share_cpu_threads`).

One job owns a run folder (:mod:`.run_lock`): the process that starts global
rank 0 (this launcher for local processes and for SLURM's first node, rank 0
under torchrun or with one SLURM task per device: :func:`owns_the_run`) takes
the folder's lock when hydra starts the run (:class:`LaunchCallback`, before
hydra writes into the folder), so the checkpoint choice and every save happen
under it, and holds it until its ranks have ended. The job's other processes
never touch the lock: they cannot wait for it (rank 0 holds it for the whole
run, and waits for them), and they save no checkpoint. A second launch is
refused at once (exit status :data:`RUN_IN_USE_EXIT_STATUS`); its other
processes, under torchrun or SLURM, end when the scheduler ends the failed
step (torchrun at once; ``srun`` at once with ``--kill-on-bad-exit=1``,
otherwise when their rendezvous with the refused rank 0 times out), having
trained nothing.

Ranks die with their launcher: a process spawned here asks Linux for
``SIGKILL`` when its launcher dies (:func:`die_with_launcher`), so a
``kill -9`` of the launcher (or its crash) ends the run's ranks too, and with
them the lock. Under torchrun and SLURM the ranks are the scheduler's
children, not this launcher's: ending the step (``scancel``, a time limit, a
failed task) kills all of them, and torchrun's agent stops its workers when
one of them fails or it is signalled.

A frozen rank does not hang the job: every rank runs a watchdog
(:mod:`.watchdog`, ``SSLAM_WATCHDOG_TIMEOUT_S``, checked before any process
starts) that writes its stack to ``<run folder>/stalled/`` and ends it with
exit status 76 when it makes no progress; this launcher then names the
frozen rank, kills it, and ends with the same status (:func:`_join_ranks`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch

from . import run_lock, watchdog
from .resume import already_finished, check_config_changes, choose_checkpoint, resolve_launch_path, resolve_model_path

__all__ = [
    "LaunchCallback", "Topology", "infer_topology", "call_main", "prepare_run", "keep_effective_batch", "place_training_curves",
    "share_cpu_threads", "fork_data_workers", "owns_the_run", "run_lock_folder", "die_with_launcher",
    "RUN_IN_USE_EXIT_STATUS",
]

logger = logging.getLogger(__name__)

LAUNCHED_ENV = "SSLAM_PLUGIN_LAUNCHER"  # set by prepare_run; tells the tasks the launcher ran
RUN_IN_USE_EXIT_STATUS = 73  # sysexits.h EX_CANTCREAT: another launch owns the run folder
RUN_IN_USE_ADVICE = (
    "wait for it to end (a launch that crashed or was killed frees the folder at once), "
    "or start this one in another folder with hydra.run.dir=..."
)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LAUNCH_REFUSED_EXIT_STATUS = 78  # sysexits.h EX_CONFIG: the checkpoint or the settings do not fit this launch

_run_lock: Optional[run_lock.RunLock] = None  # the run folder lock this process holds


try:  # hydra is there whenever fairseq-hydra-train is
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class LaunchCallback(_HydraCallback):  # type: ignore[misc,valid-type]
    """hydra callback: own the run folder, and install the plugin's launcher before fairseq starts any process."""

    def on_run_start(self, config: Any = None, **kwargs: Any) -> None:
        """Take the run folder's lock before hydra writes its config and log into the folder.

        A refused launch thus leaves a running run's folder as it was. Where the
        folder cannot be worked out here for sure (a ``hydra.run.dir`` with the
        time in it, which hydra resolves again), :func:`call_main` takes the
        lock instead, in the folder hydra changed into.
        """
        from .preemption import stop_during_start_up

        stop_during_start_up()  # a scheduler's signal before training: exit 75 with a log line
        if config is None or not owns_the_run(os.environ, _select(config, "distributed_training.distributed_rank")):
            return
        try:
            from omegaconf import OmegaConf

            if "now:" in str(OmegaConf.to_container(config.hydra.run, resolve=False).get("dir")):
                return
            run_dir = OmegaConf.select(config, "hydra.run.dir", throw_on_missing=True)
            save_dir = _select(config, "checkpoint.save_dir") or "."
        except Exception as err:  # noqa: BLE001 - any failure here only defers the lock to call_main
            logger.debug("run folder not known before the job starts (%s): locking it in call_main", err)
            return
        if run_dir is None:
            return
        run_dir = os.path.abspath(str(run_dir))
        take_run_lock(run_lock_folder(run_dir, os.path.join(run_dir, str(save_dir))))

    def on_job_start(self, config: Any = None, **kwargs: Any) -> None:
        from .fairseq_compat import install

        install()
        drop_failing_log_files()


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

    def on_run_end(self, config: Any = None, **kwargs: Any) -> None:
        release_run_lock()


def _select(cfg: Any, dotted: str) -> Any:
    try:
        from omegaconf import OmegaConf

        return OmegaConf.select(cfg, dotted)
    except Exception:  # noqa: BLE001 - a plain mapping, or an unresolvable value
        return None


def owns_the_run(environ: Mapping[str, str], distributed_rank: Optional[int] = 0) -> bool:
    """Whether this process starts global rank 0: the one process of a job that holds the run lock.

    The same cases as :func:`infer_topology`: torchrun's ``RANK``; SLURM's
    ``SLURM_PROCID`` with several tasks (task 0 is node 0's launcher or rank
    0); otherwise this machine's launcher. ``distributed_rank`` counts where
    the user chose how processes meet (``distributed_init_method``).
    """
    if _started_by_torchrun(environ):
        return int(environ["RANK"]) == 0
    if _slurm_tasks(environ) is not None:
        return int(environ.get("SLURM_PROCID", "0")) == 0
    return int(distributed_rank or 0) == 0


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
def _owning_the_run(cfg: Any) -> Iterator[None]:
    """Hold the run lock (if this process owns the run) from the checkpoint choice until the ranks end."""
    if owns_the_run(os.environ, cfg.distributed_training.get("distributed_rank")):
        take_run_lock(run_lock_folder(os.getcwd(), cfg.checkpoint.save_dir))  # hydra runs in the run folder
    try:
        yield
    finally:
        release_run_lock()


@dataclass
class Topology:
    world_size: int
    first_rank: int  # rank of this launcher's first process
    local_processes: int  # processes this launcher runs (spawned when spawn)
    spawn: bool  # start local_processes new processes, or run one in this process
    local_index: int  # without spawn: this process's device index on its node
    init_method: Optional[str]
    backend: str


def _use_cpu(cfg: Any) -> bool:
    return bool(cfg.common.cpu) or not torch.cuda.is_available()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``scontrol`` when present, else parsed)."""
    try:
        out = subprocess.check_output(["scontrol", "show", "hostnames", nodelist], text=True)
        return out.split()[0]
    except (FileNotFoundError, subprocess.CalledProcessError, IndexError):
        pass
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist)  # "gpu[03-05,07],cpu1" -> "gpu03"
    if match is None:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR to the first node")
    prefix, _, ranges = match.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def _started_by_torchrun(environ: Mapping[str, str]) -> bool:
    return all(k in environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def _slurm_tasks(environ: Mapping[str, str]) -> Optional[Tuple[int, int, str]]:
    """(nodes, tasks, node list) of a SLURM step with several tasks or nodes; None otherwise."""
    nodes = int(environ.get("SLURM_NNODES", environ.get("SLURM_JOB_NUM_NODES", "1")))
    tasks = int(environ.get("SLURM_NTASKS", "1"))
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    return (nodes, tasks, nodelist) if nodelist and (nodes > 1 or tasks > 1) else None


def infer_topology(
    world_size: int,
    cpu: bool,
    backend: str,
    port: int,
    environ: Mapping[str, str],
    device_count: int,
) -> Topology:
    """How many processes to run, their ranks and how they meet.

    Args:
        world_size: ``distributed_training.distributed_world_size`` (used on
            one machine, and per node on CPU under SLURM).
        cpu: CPU processes (gloo) instead of one per GPU.
        backend: ``distributed_backend`` for GPUs (gloo is used on CPU).
        port: ``distributed_port`` (<= 0: pick one).
        environ: the process environment (torchrun's and SLURM's variables).
        device_count: visible GPUs.
    """
    backend = "gloo" if cpu else backend
    if _started_by_torchrun(environ):
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", 0))
        return Topology(world, rank - local, 1, False, local, "env://", backend)

    slurm = _slurm_tasks(environ)
    if slurm is not None:
        nodes, tasks, nodelist = slurm
        tasks_per_node = int(environ.get("SLURM_NTASKS_PER_NODE", "0").split("(")[0]) or tasks // nodes
        master = environ.get("MASTER_ADDR") or first_slurm_host(nodelist)
        if port <= 0:  # the same on every node: derived from the job
            port = 10000 + int(environ.get("SLURM_JOB_ID", "0")) % 50000
        init = f"tcp://{master}:{port}"
        if tasks_per_node == 1:  # one task per node: it starts one process per device
            per_node = world_size // nodes if cpu else device_count
            if per_node < 1 or (cpu and world_size % nodes):
                raise ValueError(
                    f"distributed_training.distributed_world_size={world_size} cannot be split over {nodes} nodes"
                    + ("" if cpu else f" with {device_count} GPUs each")
                )
            node = int(environ.get("SLURM_NODEID", "0"))
            return Topology(nodes * per_node, node * per_node, per_node, True, 0, init, backend)
        rank, local = int(environ["SLURM_PROCID"]), int(environ.get("SLURM_LOCALID", "0"))
        return Topology(tasks, rank - local, 1, False, local, init, backend)

    if world_size <= 1:
        return Topology(1, 0, 1, False, 0, None, backend)
    if not cpu and world_size > device_count:
        raise ValueError(
            f"distributed_training.distributed_world_size={world_size} but {device_count} GPUs are visible on this "
            "machine: use at most that many, several nodes (SLURM), or common.cpu=true for CPU processes"
        )
    port = port if port > 0 else _free_port()
    return Topology(world_size, 0, world_size, True, 0, f"tcp://127.0.0.1:{port}", backend)


def keep_effective_batch(cfg: Any, world_size: int) -> int:
    """Set ``optimization.update_freq`` so that an update sees ``task.effective_batch_size`` clips.

    Lowers ``dataset.batch_size`` (with a warning) when even ``update_freq=1``
    would exceed it. Returns the clips per update.
    """
    wanted = cfg.task.get("effective_batch_size") if "task" in cfg else None
    batch = int(cfg.dataset.batch_size or 0)
    if not wanted:
        freq = int(cfg.optimization.update_freq[0])
        clips = batch * world_size * freq
        logger.info("effective batch: %d clips per update (%d per process x %d processes x update_freq %d)",
                    clips, batch, world_size, freq)
        return clips
    wanted = int(wanted)
    if batch <= 0:
        raise ValueError("task.effective_batch_size needs dataset.batch_size (clips per process and step)")
    if wanted % (batch * world_size) == 0:
        freq = wanted // (batch * world_size)
    elif wanted % world_size == 0 and wanted // world_size < batch:
        freq = 1
        logger.warning("dataset.batch_size lowered from %d to %d to keep %d clips per update on %d processes",
                       batch, wanted // world_size, wanted, world_size)
        batch = cfg.dataset.batch_size = wanted // world_size
    else:
        raise ValueError(
            f"task.effective_batch_size={wanted} clips per update cannot be split into {world_size} processes x "
            f"dataset.batch_size={batch} x update_freq: choose a dataset.batch_size that divides "
            f"{wanted // world_size if wanted % world_size == 0 else wanted}, or set task.effective_batch_size=null "
            "and optimization.update_freq=[N] yourself"
        )
    given = list(cfg.optimization.update_freq)
    if given not in ([1], [freq]):
        raise ValueError(
            f"optimization.update_freq={given} and task.effective_batch_size={wanted} both set the batch: "
            "keep one (task.effective_batch_size=null to choose update_freq yourself)"
        )
    cfg.optimization.update_freq = [freq]
    logger.info("effective batch: %d clips per update (%d per process x %d processes x update_freq %d)",
                wanted, batch, world_size, freq)
    return wanted


def _point_user_dir_at_this_package(cfg: Any) -> None:
    """``common.user_dir: sslam_plugin`` -> this package's folder.

    The launcher imported the package already; fairseq accepts that only when
    ``user_dir`` names the same folder, and its own resolution of a bare name
    (relative to the fairseq package) does not normalise the path.
    """
    user_dir = cfg.common.get("user_dir")
    if user_dir and os.path.basename(os.path.normpath(user_dir)) == __package__.split(".")[0]:
        import sslam_plugin

        cfg.common.user_dir = os.path.dirname(os.path.abspath(sslam_plugin.__file__))


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


def prepare_run(cfg: Any, world_size: int) -> bool:
    """Everything decided once per launch, on the whole config, before processes start.

    Returns False when there is nothing to train (the run already reached ``max_update``).
    """
    _point_user_dir_at_this_package(cfg)
    place_training_curves(cfg)
    if "task" in cfg and cfg.task.get("data"):
        cfg.task.data = resolve_launch_path(cfg.task.data)
    if "model" in cfg and cfg.model.get("model_path"):
        cfg.model.model_path = resolve_model_path(cfg.model.model_path)  # or a hub repository id
    resumed = choose_checkpoint(cfg)
    if already_finished(cfg, resumed):
        return False
    if "task" in cfg and "failed_clips_dir" in cfg.task and not cfg.task.failed_clips_dir:
        cfg.task.failed_clips_dir = cfg.checkpoint.save_dir  # failed_clips.tsv beside the checkpoints
    keep_effective_batch(cfg, world_size)
    check_config_changes(cfg, resumed, world_size)  # a relaunch may not turn into another experiment
    os.environ[LAUNCHED_ENV] = "1"  # inherited by the processes started below
    return True


@contextlib.contextmanager
def _forward_stop_signals(pids: Callable[[], List[int]]) -> Iterator[None]:
    """While the ranks run, pass a stop signal sent to this launcher on to them."""
    from .preemption import STOP_SIGNALS, record_interrupt, record_signal

    def forward(signum: int, frame: Any) -> None:
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if signum == signal.SIGINT:
            record_interrupt(signum, launcher=True)  # a second Ctrl-C raises KeyboardInterrupt here too
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
) -> None:
    """One training process: rank ``first_rank + index`` on device ``index`` of its node.

    ``spawned``: this is a process the launcher (pid ``launcher_pid``) started;
    it dies with the launcher (:func:`die_with_launcher`), and leaves with
    ``os._exit`` once training is done and everything is flushed, because the
    interpreter's own teardown of gloo/DDP objects aborts it now and then
    ("terminate called without an active exception") after a finished run.
    """
    if spawned and launcher_pid is not None:
        die_with_launcher(launcher_pid)  # first: importing fairseq below takes seconds
    from fairseq.distributed import utils as distributed_utils

    from .data_loading import close_all_batch_iterators
    from .fairseq_compat import install
    from .preemption import requested_signal, stop_on_signals

    install()  # a spawned process starts without the plugin
    if spawned:
        fork_data_workers()
    stop_on_signals()
    distributed = cfg.distributed_training.distributed_init_method is not None
    watchdog.start(first_rank + index if distributed else 0, watchdog.stalled_folder(), requested_signal)
    try:
        if not distributed:
            main(cfg, **kwargs)
        else:
            cfg.distributed_training.distributed_rank = first_rank + index
            distributed_utils.distributed_main(index, main, cfg, kwargs)
    except (RuntimeError, OSError) as err:
        from .resume import dataloader_mismatch, disk_full

        # one line instead of fairseq's words (its command-line flag) or a save's traceback
        plain = dataloader_mismatch(err, cfg) or disk_full(err, cfg)
        if plain is None:
            raise
        raise plain from None
    finally:
        watchdog.stop()  # training is over: the teardown below is not an update
        # Threads left running at interpreter exit (a prefetch thread, the process
        # group's) abort the process; fairseq leaves both.
        close_all_batch_iterators()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if spawned:
        exit_now(0)


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
    if environ.get("OMP_NUM_THREADS"):
        return int(environ["OMP_NUM_THREADS"])
    threads = max(1, torch.get_num_threads() // processes)
    environ["OMP_NUM_THREADS"] = str(threads)  # read by torch as each spawned rank starts
    logger.info("%d CPU processes here: %d torch threads each (set OMP_NUM_THREADS to choose)", processes, threads)
    return threads


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


def call_main(cfg: Any, main: Callable[..., Any], **kwargs: Any) -> Any:
    """fairseq's ``call_main`` for this plugin (see the module docstring)."""
    from .preemption import RESUMABLE_EXIT_STATUS, requested_signal

    from .resume import LAUNCH_REFUSALS

    drop_failing_log_files()  # hydra's log file is in place by now
    try:
        with _owning_the_run(cfg):
            result = _start_processes(cfg, main, **kwargs)
    except LAUNCH_REFUSALS as err:  # a bad checkpoint or a changed config: the message says it all
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


def _start_processes(cfg: Any, main: Callable[..., Any], **kwargs: Any) -> Any:
    """Choose the checkpoint, then run this launcher's ranks to their end."""
    from .fairseq_compat import original

    dist_cfg = cfg.distributed_training
    if (
        cfg.common.tpu
        or dist_cfg.pipeline_model_parallel
        or cfg.common.model_parallel_size > 1
        or dist_cfg.distributed_init_method is not None  # the user chose how processes meet
    ):
        if not prepare_run(cfg, dist_cfg.distributed_world_size):
            return None
        return original("call_main")(cfg, main, **kwargs)
    cpu = _use_cpu(cfg)
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
        return
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
        run_rank(topology.local_index, main, cfg, kwargs, topology.first_rank)
    else:
        context = torch.multiprocessing.start_processes(
            run_rank,
            args=(main, cfg, kwargs, topology.first_rank, True, os.getpid()),
            nprocs=topology.local_processes,
            join=False,
            start_method="spawn",
        )
        with _forward_stop_signals(lambda: [p.pid for p in context.processes if p.is_alive()]):
            _join_ranks(context, topology.first_rank)


def _join_ranks(context: Any, first_rank: int) -> None:
    """Wait for the spawned ranks; one ended by its watchdog (or a stop it could not honour) ends them all.

    torch's ``join`` would SIGTERM the others and wait 30 s for each frozen
    one; here the frozen ranks are named and killed first, and the launcher
    exits with the rank's status (76: stalled, 75: resumable stop).

    Raises:
        SystemExit: with :data:`.watchdog.WATCHDOG_EXIT_STATUS` or 75 as above.
    """
    from multiprocessing.connection import wait

    from torch.multiprocessing.spawn import ProcessException

    from .preemption import RESUMABLE_EXIT_STATUS

    processes = context.processes
    ends_the_job = (watchdog.WATCHDOG_EXIT_STATUS, RESUMABLE_EXIT_STATUS)
    while True:
        running = {p.sentinel: p for p in processes if p.exitcode is None}
        for sentinel in wait(list(running)) if running else []:  # until any rank ends
            running[sentinel].join()  # its sentinel closes a moment before its exit status is there
        codes = {first_rank + i: p.exitcode for i, p in enumerate(processes)}
        status = max((c for c in codes.values() if c in ends_the_job), default=None)  # 76 before 75
        if status is None:
            try:
                if context.join(timeout=0):
                    return
                continue
            except torch.multiprocessing.ProcessExitedException as err:
                if err.exit_code not in ends_the_job:  # a rank that failed otherwise: torch's report
                    raise
                status = err.exit_code  # ended between the look above and join's
        pids = {first_rank + i: p.pid for i, p in enumerate(processes)}
        if status == watchdog.WATCHDOG_EXIT_STATUS:
            watchdog.report_stalled_ranks(pids, codes, watchdog.stalled_folder(), status)  # kills the frozen ones
            with contextlib.suppress(ProcessException):
                context.join(grace_period=10)  # the others' watchdogs end them too; then SIGTERM, SIGKILL
            raise SystemExit(status)
        # A resumable stop: the other ranks stop too, and one may still be writing the stop's
        # checkpoint (minutes for a large model on a slow file system), so they are waited for,
        # never cut short. Only a rank frozen by a signal would never end: it is killed.
        logger.warning("a rank stopped with status %d (resumable): waiting for the others to stop", status)
        frozen = {r: pid for r, pid in pids.items() if codes[r] is None and watchdog.process_state(pid) in watchdog.FROZEN_STATES}
        if frozen:
            watchdog.report_stalled_ranks(frozen, codes, watchdog.stalled_folder(), status)
        for process in processes:
            process.join()
        raise SystemExit(status)
