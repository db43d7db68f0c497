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
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import List, Mapping, Optional, Sequence

__all__ = ["main", "stop_signals"]

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] in (["-h"], ["--help"]):
        print("usage: sslam-train --config-dir DIR --config-name NAME [OVERRIDES ...]\n\n" + __doc__.split("\n\n", 1)[1]
              + "\nThe options and overrides: fairseq-hydra-train --help, or sslam-config-dir --options.")
        return 0
    for sig in stop_signals():
        signal.signal(sig, _record)
    from fairseq_cli.hydra_train import cli_main  # seconds: fairseq, torch, hydra

    from sslam_plugin.training import preemption

    preemption.stop_during_start_up()  # from here on, a stop signal ends the launch with 75 and a log line
    if _early:
        logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", level=logging.INFO,
                            stream=sys.stderr)
        try:
            preemption.stop_before_training(_early[0])
        except SystemExit as stop:
            return int(stop.code)
    sys.argv = [sys.argv[0], *args]
    cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
