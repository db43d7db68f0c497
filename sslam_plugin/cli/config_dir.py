"""``sslam-config-dir``: where the installed package's hydra recipes are, and what they can set.

    fairseq-hydra-train --config-dir "$(sslam-config-dir)/pretrain" --config-name eat_stage1 task.data=...
    sslam-config-dir --options eat_stage1    # every task, model and criterion option, as that recipe sets it
    sslam-config-dir --options finetune/as20k
    sslam-config-dir --options pretrain      # the same options with the code's defaults

The recipes ship inside the package (``sslam_plugin/config``); a checkout's
top-level ``config`` is the same folder. A recipe lists only the options it
changes; any other option is set on the command line with hydra's ``++``
prefix (``++model.fast_step=false``): fairseq checks the recipe's keys, not the
plugin's, so without it hydra answers "Key ... is not in struct".

``--options RECIPE`` composes the recipe as fairseq-hydra-train does (hydra,
fairseq's schema, the plugin's registered dataclasses) and prints its values in
YAML spelling (``null``, ``true``), ready to copy into an override.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import warnings
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


def yaml_value(value: Any) -> str:
    """``value`` as hydra reads it on a command line: ``null``, ``true``, ``[1, 2]``, ``???`` for a missing one."""
    import yaml
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, str) and value == "???":
        return value
    if hasattr(value, "name") and type(value).__module__ != "builtins" and not isinstance(value, (list, dict)):
        value = value.name  # an Enum choice
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") or text.endswith("...") and "\n" in text else text


def find_recipe(name: str) -> Tuple[str, Path]:
    """``pretrain/eat_stage1``, ``eat_stage1`` or ``eat_stage1.yaml`` -> (folder, recipe file).

    Raises ValueError naming the choices when there is no such recipe or several.
    """
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    folders = ("pretrain", "finetune", "linear_eval")
    folder, _, stem = name.rpartition("/")
    matches = [(f, config_dir() / f / f"{stem}.yaml") for f in ((folder,) if folder else folders)]
    matches = [(f, path) for f, path in matches if f in folders and path.is_file() and not stem.startswith("_")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"recipe {name!r} is in several folders; name one: " + ", ".join(f"{f}/{stem}" for f, _ in matches))
    known = sorted(f"{f}/{p.stem}" for f in folders for p in (config_dir() / f).glob("*.yaml") if not p.stem.startswith("_"))
    raise ValueError(f"no recipe {name!r}; choose a folder ({', '.join(folders)}) or one of: {', '.join(known)}")


def composed_recipe(folder: str, recipe: Path) -> Any:
    """The recipe as fairseq-hydra-train composes it, with the plugin's dataclass defaults filled in (needs fairseq)."""
    recipe_options(folder)  # imports (and so registers) the plugin's task, model and criterion quietly
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():  # hydra's note on fairseq's schema matching, which fairseq relies on
            warnings.simplefilter("ignore", UserWarning)
            hydra_init(recipe.stem)
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(recipe.parent), version_base=None):
                cfg = compose(config_name=recipe.stem)
            missing = _missing_keys(cfg)
            add_defaults(cfg)  # fairseq's merge fills a ??? left by the recipe with the code's default
    finally:
        logging.disable(logging.NOTSET)
    for key in missing:  # what the user must give, as the recipe says
        OmegaConf.update(cfg, key, "???", force_add=True)
    return cfg


def _missing_keys(cfg: Any, prefix: str = "") -> List[str]:
    from omegaconf import DictConfig, OmegaConf

    keys: List[str] = []
    for key in cfg.keys() if isinstance(cfg, DictConfig) else ():
        if OmegaConf.is_missing(cfg, key):
            keys.append(f"{prefix}{key}")
        elif isinstance(cfg._get_node(key), DictConfig):
            keys += _missing_keys(cfg[key], f"{prefix}{key}.")
    return keys


def print_options(name: str) -> None:
    """The plugin's options: with a recipe's values for a recipe name, else the code's defaults."""
    from omegaconf import OmegaConf

    if name in ("pretrain", "finetune", "linear_eval"):
        print(f"# options of the {name} recipes with the code's defaults (a recipe's values: "
              f"sslam-config-dir --options {name}/RECIPE); one the recipe does not list is set with ++, e.g. "
              f"++model.fast_step=false (fairseq's own options: fairseq-hydra-train --help)")
        for key, default, help_text in recipe_options(name):
            print(f"{key}={yaml_value(default)}" + (f"  # {help_text}" if help_text else ""))
        return
    folder, recipe = find_recipe(name)
    cfg = composed_recipe(folder, recipe)
    print(f"# options of {folder}/{recipe.stem} as fairseq-hydra-train composes it ({recipe}); one the recipe "
          "does not list is set with ++, e.g. ++model.fast_step=false")
    for key, _, help_text in recipe_options(folder):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        value = "???" if node is None or OmegaConf.is_missing(node, leaf) else OmegaConf.select(cfg, key)
        print(f"{key}={yaml_value(value)}" + (f"  # {help_text}" if help_text else ""))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv and argv[0] == "--options":
        if len(argv) != 2:
            print("error: --options takes one recipe (e.g. eat_stage1, finetune/as20k) or folder "
                  "(pretrain, finetune, linear_eval)", file=sys.stderr)
            return 2
        try:
            print_options(argv[1])
        except ValueError as err:  # no such recipe: a usage error, as argparse's invalid choice
            print(f"error: {err}", file=sys.stderr)
            return 2
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
