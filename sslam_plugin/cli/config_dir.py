"""``sslam-config-dir``: where the installed package's hydra recipes are.

    fairseq-hydra-train --config-dir "$(sslam-config-dir)/pretrain" --config-name eat_stage1 task.data=...

The recipes ship inside the package (``sslam_plugin/config``); a checkout's
top-level ``config`` is the same folder.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

RECIPE_FOLDERS = ("pretrain", "finetune", "linear_eval", "run_config")


def config_dir() -> Path:
    """The folder holding ``pretrain/``, ``finetune/``, ``linear_eval/`` and ``run_config/``."""
    return Path(__file__).resolve().parents[1] / "config"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    folder = config_dir()
    if argv:
        if argv[0] not in RECIPE_FOLDERS:
            print(f"error: no recipe folder {argv[0]!r}; choose one of {', '.join(RECIPE_FOLDERS)}", file=sys.stderr)
            return 2
        folder = folder / argv[0]
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
