"""Submit a fairseq-hydra-train run to SLURM with submitit; preempted or timed-out jobs save, then requeue.

    sslam-submit --config-dir config/pretrain --config-name eat_stage1 \\
        --job-dir /abs/runs/eat_stage1 --run-config config/run_config/slurm_1x4.yaml \\
        --partition gpu --account myproj --qos high \\
        -- task.data=/abs/path/to/manifests

Everything after ``--`` goes to fairseq-hydra-train as overrides. Cluster
settings come from a run config (``config/run_config/*.yaml``: the keys of
hydra's submitit launcher, as fairseq's data2vec recipes use them), then from
the flags here; ``--slurm KEY=VALUE`` passes any other sbatch option. The run
folder is JOB_DIR/run (checkpoints in JOB_DIR/run/checkpoints), submitit's logs
are in JOB_DIR/submitit.

One task per node starts one training process per GPU; ranks, the world size
and the master come from SLURM's variables (``sslam_plugin.training.launch``).
About 90 s before the time limit SLURM sends SIGUSR2 (``--signal-delay-s``);
on it, or on a preemption's SIGTERM, every rank saves a checkpoint at the next
update and stops, and only then is the job requeued: the requeued job resumes
from that update. A job whose ranks stalled (the training watchdog's exit
status 76) is requeued too, at most ``MAX_STALL_REQUEUES`` times, so a node
with a hung collective does not burn the allocation and a stall that repeats
does not loop.

Why a script and not ``hydra/launcher=submitit_slurm``: hydra's launcher needs
multirun mode, whose numbered sweep folders break "the same command resumes
the run", and it requeues without waiting for the checkpoint.

``--cluster local`` runs the same job as a local subprocess (no SLURM), and
``--cluster debug`` in this process: both are for trying a command first, and
only run when asked: without SLURM (no ``sbatch``) and without ``--cluster``,
the command stops with an error instead of training on this machine (a login
node, most likely). With ``--wait``, a job that fails is reported by its last
error line and the path of its log.

Exit status: 0, 1 when the job cannot be submitted or (``--wait``) failed, 2 for
a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import submitit
import yaml


logger = logging.getLogger("submit_slurm")

RESUMABLE_EXIT_STATUS = 75  # fairseq-hydra-train stopped on a signal after saving (see preemption.py)
STOP_WAIT_S = 600  # longest wait for the ranks to save after a stop signal
REQUEUE_WAIT_S = 600  # after a stop that submitit did not see: time for SLURM to requeue or end the job
MAX_STALL_REQUEUES = 3  # requeues after watchdog exits (SLURM_RESTART_COUNT counts every requeue)

# run-config keys (hydra's submitit launcher) -> submitit's AutoExecutor parameters
RUN_CONFIG_KEYS = {
    "nodes": "nodes",
    "gpus_per_node": "gpus_per_node",
    "tasks_per_node": "tasks_per_node",
    "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb",
    "timeout_min": "timeout_min",
    "name": "name",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "comment": "slurm_comment",
    "exclude": "slurm_exclude",
    "exclusive": "slurm_exclusive",
    "signal_delay_s": "slurm_signal_delay_s",
    "max_num_timeout": "slurm_max_num_timeout",
    "additional_parameters": "slurm_additional_parameters",
    "setup": "slurm_setup",
}


class TrainJob(submitit.helpers.Checkpointable):
    """Runs fairseq-hydra-train; on SLURM's stop signal, lets it save, then asks to be requeued as it is.

    Requeuing is resuming: the command's run folder holds the checkpoint.
    """

    def __init__(self, command: List[str], cwd: str):
        self.command = command
        self.cwd = cwd
        self._process: Optional[subprocess.Popen] = None

    def __getstate__(self) -> Dict[str, Any]:
        return {"command": self.command, "cwd": self.cwd, "_process": None}

    def __call__(self) -> int:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # its own process group, so that checkpoint() can reach every rank
        self._process = subprocess.Popen(self.command, cwd=self.cwd, env=env, start_new_session=True)
        returncode = self._process.wait()
        from sslam_plugin.training.watchdog import WATCHDOG_EXIT_STATUS  # imports fairseq: in the job only
        if returncode == RESUMABLE_EXIT_STATUS:
            # A stop signal that reached the ranks but not submitit's handler (a
            # preemption's SIGTERM): SLURM requeues or ends this job itself.
            logger.warning("training stopped on a signal with a checkpoint; waiting for SLURM to requeue the job")
            time.sleep(REQUEUE_WAIT_S)
        elif returncode == WATCHDOG_EXIT_STATUS:
            requeue_after_stall(os.environ)
        if returncode != 0:
            raise RuntimeError(f"fairseq-hydra-train exited with {returncode}: {' '.join(self.command)}")
        return returncode

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on the time-limit signal: wait for the ranks' checkpoint, then requeue."""
        process = self._process
        if process is not None and process.poll() is None:
            try:  # SLURM signals every process of the step; this covers a signal sent to the job shell only
                os.killpg(process.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                logger.error("training did not stop within %d s of the signal; requeuing anyway", STOP_WAIT_S)
        return submitit.helpers.DelayedSubmission(TrainJob(self.command, self.cwd))


def requeue_after_stall(environ: Dict[str, str]) -> None:
    """A rank stalled (the stacks are in the run folder's ``stalled/``): ask SLURM to requeue the job.

    The requeued job resumes from the last checkpoint. Returns only when the
    job was not requeued (outside SLURM, the limit reached, scontrol failed)
    or SLURM did not end it within ``REQUEUE_WAIT_S``.
    """
    from sslam_plugin.training.watchdog import WATCHDOG_EXIT_STATUS  # imports fairseq: in the job only

    job_id = environ.get("SLURM_JOB_ID")
    restarts = int(environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if not job_id:
        logger.error("a training rank stalled (exit status %d); not under SLURM: nothing to requeue", WATCHDOG_EXIT_STATUS)
        return
    if restarts >= MAX_STALL_REQUEUES:
        logger.error(
            "a training rank stalled again (exit status %d) after %d requeues; not requeuing: read the stacks "
            "in the run folder's stalled/ and the node's health", WATCHDOG_EXIT_STATUS, restarts,
        )
        return
    logger.warning(
        "a training rank stalled (exit status %d; stacks in the run folder's stalled/); requeuing job %s "
        "(requeue %d of at most %d)", WATCHDOG_EXIT_STATUS, job_id, restarts + 1, MAX_STALL_REQUEUES,
    )
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if result.returncode != 0:
        logger.error("scontrol requeue %s failed: %s", job_id, (result.stderr or result.stdout).strip())
        return
    time.sleep(REQUEUE_WAIT_S)  # SLURM ends this job for the requeue


def build_command(config_dir: str, config_name: str, job_dir: Path, world_size: int, overrides: Sequence[str]) -> List[str]:
    # sslam-train: fairseq-hydra-train that honours a stop signal arriving while fairseq imports
    return [
        sys.executable, "-m", "sslam_plugin.cli.train",
        "--config-dir", str(Path(config_dir).resolve()),
        "--config-name", config_name,
        f"hydra.run.dir={job_dir.resolve() / 'run'}",
        f"distributed_training.distributed_world_size={world_size}",
        *overrides,
    ]


def parse_slurm_options(options: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--slurm expects KEY=VALUE (an sbatch option), got {option!r}")
        out[key.lstrip("-")] = value
    return out


def executor_parameters(args: argparse.Namespace) -> Dict[str, Any]:
    """submitit parameters: the run config's, then the flags'."""
    settings: Dict[str, Any] = {"nodes": 1, "gpus_per_node": 1, "cpus_per_task": 10, "timeout_min": 60 * 72}
    if args.run_config:
        loaded = yaml.safe_load(Path(args.run_config).read_text()) or {}
        unknown = sorted(set(loaded) - set(RUN_CONFIG_KEYS))
        if unknown:
            raise ValueError(f"{args.run_config}: unknown run-config keys {unknown}; known: {sorted(RUN_CONFIG_KEYS)}")
        settings.update(loaded)
    for key in RUN_CONFIG_KEYS:
        value = getattr(args, key, None)
        if value is not None and value is not False:
            settings[key] = value
    settings.setdefault("name", args.config_name)
    extra = dict(settings.pop("additional_parameters", None) or {})
    extra.update(parse_slurm_options(args.slurm))
    extra.setdefault("requeue", True)  # scontrol requeue needs a requeueable job
    settings["additional_parameters"] = extra
    settings["tasks_per_node"] = 1  # the launcher starts one process per GPU itself
    if settings["nodes"] < 1 or settings["gpus_per_node"] < 0:
        raise ValueError("nodes must be >= 1 and gpus_per_node >= 0")
    return {RUN_CONFIG_KEYS[k]: v for k, v in settings.items()}


def slurm_available() -> bool:
    """Whether jobs can be submitted to SLURM from here (``sbatch`` on PATH)."""
    return shutil.which("sbatch") is not None


_ERROR_LINE = re.compile(r"\berror\b|Error\b|Exception\b|exited with", re.IGNORECASE)
# hydra's wrapping around the cause: never the line to show
_HYDRA_HINTS = ("HYDRA_FULL_ERROR", "Error executing job with overrides", "Traceback")


def last_error_line(log_text: str) -> Optional[str]:
    """The child's last line that reads as an error, before submitit's own report of the failure."""
    lines = [line.strip() for line in log_text.splitlines()]
    for i, line in enumerate(lines):  # submitit appends its traceback of the job function: not the cause
        if "submitit ERROR" in line:
            lines = lines[:i]
            break
    candidates = [line for line in lines if _ERROR_LINE.search(line) and not any(h in line for h in _HYDRA_HINTS)]
    if candidates:
        return candidates[-1]
    rest = [line for line in lines if line]
    return rest[-1] if rest else None


def job_failure(job: Any) -> str:
    """One line for a failed job: its last error line and where its log is."""
    paths = [Path(job.paths.stderr), Path(job.paths.stdout)]
    text = ""
    for path in paths:
        try:
            text += path.read_text(errors="replace") + "\n"
        except OSError:
            pass
    line = last_error_line(text) or "no error line in its log"
    return f"job {job.job_id} failed: {line} (log: {paths[0]})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: List[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, overrides = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--config-name", required=True)
    parser.add_argument("--job-dir", type=Path, required=True, help="run and log folder")
    parser.add_argument("--run-config", help="cluster settings (YAML, e.g. config/run_config/slurm_1x4.yaml)")
    parser.add_argument(
        "--cluster", choices=["slurm", "local", "debug"], default=None,
        help="slurm (the default; needs sbatch), local (a subprocess on this machine) or debug (in this process)",
    )
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--gpus-per-node", dest="gpus_per_node", type=int)
    parser.add_argument("--cpus-per-task", dest="cpus_per_task", type=int)
    parser.add_argument("--mem-gb", dest="mem_gb", type=int)
    parser.add_argument("--time-min", dest="timeout_min", type=int)
    parser.add_argument("--signal-delay-s", dest="signal_delay_s", type=int, help="seconds between SIGUSR2 and the time limit")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--qos")
    parser.add_argument("--constraint")
    parser.add_argument("--comment")
    parser.add_argument("--exclude")
    parser.add_argument("--exclusive", action="store_true", default=None)
    parser.add_argument("--name", help="job name (default: the config name)")
    parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option")
    parser.add_argument("--wait", action="store_true", help="wait for the job and report its end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        params = executor_parameters(args)
    except (OSError, yaml.YAMLError) as err:
        print(f"error: {args.run_config}: cannot read the run config ({err}); pass a YAML file of cluster "
              "settings such as config/run_config/slurm_1x4.yaml", file=sys.stderr)
        return 1
    except (ValueError, argparse.ArgumentTypeError) as err:
        parser.error(str(err))

    cluster = args.cluster or "slurm"
    if cluster == "slurm" and not slurm_available():
        print(
            "error: SLURM is not available here (no sbatch on PATH); run this on a SLURM login node, or pass "
            "--cluster local to train on this machine",
            file=sys.stderr,
        )
        return 1

    job_dir = args.job_dir.resolve()
    max_timeouts = params.pop("slurm_max_num_timeout", 3)  # an executor setting, not a job parameter
    executor = submitit.AutoExecutor(folder=job_dir / "submitit", cluster=cluster, slurm_max_num_timeout=max_timeouts)
    if executor.cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    executor.update_parameters(**params)
    world_size = params["nodes"] * max(params["gpus_per_node"], 1)
    command = build_command(args.config_dir, args.config_name, job_dir, world_size, overrides)
    try:
        job = executor.submit(TrainJob(command, cwd=os.getcwd()))
    except Exception as err:  # sbatch refused the job (a wrong partition, account or limit)
        detail = " ".join(str(err).split())
        print(f"error: the job could not be submitted: {detail}", file=sys.stderr)
        return 1
    logger.info("submitted job %s (%s): %s", job.job_id, executor.cluster, " ".join(command))
    logger.info("logs: %s  run: %s", job_dir / "submitit", job_dir / "run")
    if args.wait:
        try:
            job.result()
        except Exception:  # submitit's FailedJobError / UncompletedJobError: a traceback about job.stderr(0)
            print(f"error: {job_failure(job)}", file=sys.stderr)
            return 1
        logger.info("job %s finished", job.job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
