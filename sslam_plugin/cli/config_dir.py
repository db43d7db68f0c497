"""``sslam-config-dir``: where the installed package's hydra recipes are, and what they can set.

    fairseq-hydra-train --config-dir "$(sslam-config-dir)/pretrain" --config-name eat_stage1 task.data=...
    sslam-config-dir --options pretrain      # every task, model and criterion option, with its default

The recipes ship inside the package (``sslam_plugin/config``); a checkout's
top-level ``config`` is the same folder. A recipe lists only the options it
changes; any other option is set on the command line with hydra's ``++``
prefix (``++model.fast_step=false``): fairseq checks the recipe's keys, not the
plugin's, so without it hydra answers "Key ... is not in struct".
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

RECIPE_FOLDERS = ("pretrain", "finetune", "linear_eval", "run_config")


def config_dir() -> Path:
    """The folder holding ``pretrain/``, ``finetune/``, ``linear_eval/`` and ``run_config/``."""
    return Path(__file__).resolve().parents[1] / "config"


def _options_of(node: Any, prefix: str) -> Iterator[Tuple[str, Any, str]]:
    """(dotted key, default, help) of every field of a config dataclass, nested ones flattened."""
    for field in dataclasses.fields(node):
        if field.name.startswith("_"):
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = "???"
        if dataclasses.is_dataclass(default):
            yield from _options_of(default, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", default, field.metadata.get("help", "")


def recipe_options(folder: str) -> List[Tuple[str, Any, str]]:
    """The plugin's options for the recipes of ``folder``: task, model and criterion (needs fairseq)."""
    logging.disable(logging.INFO)  # fairseq's modules log on import (tensorboardX, registrations)
    try:
        if folder == "pretrain":
            from ..training.criterion import SSLAMWeightedLossesConfig as criterion
            from ..training.model import SSLAMPretrainingModelConfig as model
            from ..training.task import SSLAMPretrainingTaskConfig as task
        else:
            from ..training.classification_criterion import ClassificationCriterionConfig as criterion
            from ..training.classification_task import ClassificationTaskConfig as task
            from ..training.classifier_model import ClassifierModelConfig as model
    finally:
        logging.disable(logging.NOTSET)
    options: List[Tuple[str, Any, str]] = []
    for name, node in (("task", task), ("model", model), ("criterion", criterion)):
        options += _options_of(node, f"{name}.")
    return options


def print_options(folder: str) -> None:
    print(f"# options of the {folder} recipes; one the recipe does not list is set with ++, e.g. "
          f"++model.fast_step=false (fairseq's own options: fairseq-hydra-train --help)")
    for key, default, help_text in recipe_options(folder):
        value = str(default).replace("\n", " ")
        print(f"{key}={value}" + (f"  # {help_text}" if help_text else ""))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv and argv[0] == "--options":
        folders = ("pretrain", "finetune", "linear_eval")
        if len(argv) != 2 or argv[1] not in folders:
            print(f"error: --options takes one of {', '.join(folders)}", file=sys.stderr)
            return 2
        try:
            print_options(argv[1])
        except BrokenPipeError:  # `| head`: the reader has seen enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
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
