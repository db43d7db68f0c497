"""``sslam-train``: ``fairseq-hydra-train`` with the plugin's stop signals handled from the first instant.

Takes the same arguments as ``fairseq-hydra-train`` (``--config-dir``,
``--config-name``, overrides). A scheduler's stop signal (SIGTERM, SIGUSR1,
SIGUSR2, submitit's ``SUBMITIT_PREEMPT_SIGNAL``) that arrives while Python
still imports fairseq, before any plugin code could run, would kill
``fairseq-hydra-train`` silently (exit status 128 + signal). Here it is
recorded from the start: once the imports are done the launch ends with the
resumable exit status 75 and a log line, as a stop signal does later in the
start-up; after that, the run saves and stops as usual (see
``sslam_plugin.training.preemption``). This module imports nothing heavy
before the handlers are in place.

What fairseq and hydra print while fairseq imports and hydra composes the
config, before the run's log exists, asks nothing of the user: hydra's
``version_base`` and "validated against ConfigStore schema" warnings (fairseq's
``hydra.main`` names no version, and fairseq stores its config schema under the
recipe's name) and fairseq's messages below WARNING, such as its "Please install
tensorboardX" line. Those go into the run's log file (``hydra_train.log``)
instead of the terminal; other warnings and errors print as before.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from typing import Any, List, Mapping, Optional, Sequence

__all__ = ["main", "stop_signals", "hold_start_up_output", "write_start_up_output", "START_UP_WARNINGS"]

_early: List[int] = []  # stop signals received before the plugin's handlers took over


def stop_signals(environ: Mapping[str, str] = os.environ) -> List[signal.Signals]:
    """The stop signals a cluster sends (the same list as ``sslam_plugin.training.preemption.STOP_SIGNALS``).

    Computed here from the standard library alone: importing the training
    package would import fairseq first, which is the window this command covers.
    """
    names = ["SIGTERM", "SIGUSR1", "SIGUSR2"]
    submitit = environ.get("SUBMITIT_PREEMPT_SIGNAL")
    if submitit:
        names.append(submitit if submitit.startswith("SIG") else "SIG" + submitit)
    return list(dict.fromkeys(getattr(signal, n) for n in names if hasattr(signal, n)))


def _record(signum: int, frame: object) -> None:
    _early.append(signum)


# The warnings every launch printed before the run's log existed (the text of each; other warnings show).
START_UP_WARNINGS = (
    "The version_base parameter is not specified",  # fairseq's @hydra.main names no version
    "is validated against ConfigStore schema with the same name",  # hydra's automatic schema matching
)
_kept: List[logging.LogRecord] = []  # start-up output held back for the run's log file
_show_warning = warnings.showwarning  # how the other warnings show (set when the output is held)


class _StartUpLog(logging.Handler):
    """The root handler while fairseq imports: below WARNING kept for the run's log, the rest to stderr.

    Installed first, it also turns fairseq's module-level ``logging.basicConfig``
    calls into no-ops; stderr gets what their handler printed, in its format.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            _kept.append(record)
        else:
            sys.stderr.write(logging.Formatter(logging.BASIC_FORMAT).format(record) + "\n")


def _keep_start_up_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                           line: Optional[str] = None) -> None:
    if file is None and any(text in str(message) for text in START_UP_WARNINGS):
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        _kept.append(logging.makeLogRecord({"name": "py.warnings", "levelno": logging.WARNING,
                                            "levelname": "WARNING", "msg": text}))
    else:
        _show_warning(message, category, filename, lineno, file, line)


def hold_start_up_output() -> None:
    """Hold fairseq's and hydra's start-up output (see the module's docstring) until :func:`write_start_up_output`."""
    global _show_warning
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_StartUpLog())
        root.setLevel(logging.DEBUG)  # what fairseq's first basicConfig call (wav2vec2_classification) sets
    if warnings.showwarning is not _keep_start_up_warning:
        _show_warning = warnings.showwarning
    warnings.showwarning = _keep_start_up_warning


def write_start_up_output() -> None:
    """Write the held output into the run's log files (hydra's job logging is set up by now); stderr if none."""
    warnings.showwarning = _show_warning
    kept, _kept[:] = list(_kept), []
    targets: List[logging.Handler] = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not targets:  # hydra's job logging without a file (hydra/job_logging=disabled ...): as before
        targets = [logging.StreamHandler(sys.stderr)]
        targets[0].setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    for handler in targets:
        for record in kept:
            if record.levelno >= handler.level:
                handler.handle(record)


def _write_start_up_output_first(run_task: Any) -> Any:
    """fairseq's task function run under hydra, writing the held start-up output first."""

    def run(cfg: Any, **kwargs: Any) -> Any:
        write_start_up_output()
        return run_task(cfg, **kwargs)

    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["-h"], ["--help"]):
        print("usage: sslam-train --config-dir DIR --config-name NAME [OVERRIDES ...]\n\n" + __doc__.split("\n\n", 1)[1]
              + "\nThe options and overrides: fairseq-hydra-train --help, or sslam-config-dir --options.")
        return 0
    for sig in stop_signals():
        signal.signal(sig, _record)
    hold_start_up_output()
    from fairseq_cli import hydra_train  # seconds: fairseq, torch, hydra

    from sslam_plugin.training import preemption

    preemption.stop_during_start_up()  # from here on, a stop signal ends the launch with 75 and a log line
    if _early:
        logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                            stream=sys.stderr, force=True)
        try:
            preemption.stop_before_training(_early[0])
        except SystemExit as stop:
            return int(stop.code)
    sys.argv = [sys.argv[0], *args]
    # hydra_main looks its task function up when it runs: by then hydra has changed into the run
    # folder and opened the run's log file
    hydra_train._hydra_main = _write_start_up_output_first(hydra_train._hydra_main)
    hydra_train.cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
