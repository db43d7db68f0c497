"""The recipes' entry point into the plugin's launcher: a hydra callback, run before fairseq starts anything.

    hydra:
      callbacks:
        sslam_launch:
          _target_: sslam_plugin.training.launch.LaunchCallback

When hydra starts the run, :class:`LaunchCallback` takes the run folder's lock
(:mod:`.run_ownership`) before hydra writes into the folder; when the job
starts, it installs the fairseq adapter (:func:`.fairseq_adapter.install`),
which hands fairseq's process start-up to :func:`.processes.call_main`. The
launcher's parts: where processes come from (:mod:`.topology`), the launch
settings (:mod:`.launch_options`), the checkpoint choice (:mod:`.resume`), the
relaunch check (:mod:`.relaunch_changes`), one line per refusal
(:mod:`.launch_refusals`), each rank (:mod:`.rank`), stop signals
(:mod:`.preemption`) and the watchdog (:mod:`.watchdog`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .config_keys import select
from .fairseq_adapter import install as install_fairseq_adapter
from .launch_refusals import LAUNCH_REFUSED_EXIT_STATUS
from .preemption import stop_during_start_up
from .run_ownership import release_run_lock, run_lock_folder, take_run_lock
from .run_setup import drop_failing_log_files, place_training_curves, quiet_known_warnings
from .topology import owns_the_run

__all__ = ["LaunchCallback", "LAUNCH_REFUSED_EXIT_STATUS", "place_training_curves"]

logger = logging.getLogger(__name__)

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
        time in it, which hydra resolves again), :func:`.processes.call_main`
        takes the lock instead, in the folder hydra changed into.
        """
        stop_during_start_up()  # a scheduler's signal before training: exit 75 with a log line
        quiet_known_warnings()
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
        """Install the fairseq adapter (the launcher and the fixes; speed-ups unless switched off)."""
        try:
            install_fairseq_adapter()
        except ValueError as err:  # SSLAM_FAIRSEQ_SPEEDUPS with a value it does not take
            logger.error("%s", err)
            raise SystemExit(LAUNCH_REFUSED_EXIT_STATUS) from None
        drop_failing_log_files()

    def on_run_end(self, config: Any = None, **kwargs: Any) -> None:
        release_run_lock()


def _select(cfg: Any, dotted: str) -> Any:
    """A key of hydra's config, None where it is missing or does not resolve (yet)."""
    try:
        from omegaconf import OmegaConf

        return OmegaConf.select(cfg, dotted)
    except Exception:  # noqa: BLE001 - a plain mapping, or an unresolvable value
        return select(cfg, dotted)
