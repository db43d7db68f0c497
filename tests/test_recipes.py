"""The recipes in config/ and every override the project shows or uses name real settings.

Each recipe is composed as ``fairseq-hydra-train`` composes it, then checked the way fairseq builds
its parts: the task, model, criterion, optimizer (with each composite group) and lr scheduler
sections are merged, in struct mode, into the dataclass registered under their ``_name``. A
misspelled key or a value of the wrong type fails here instead of at launch. Every
``KEY=VALUE`` override in the docs, the recipes' header comments, the Makefile, scripts,
benchmarks, the package's messages and the tests must name a key of those configs; the
``fairseq-hydra-train`` commands in the docs must also use hydra's prefix rules (a plain
``KEY=VALUE`` only for a key the recipe composes, ``++`` otherwise).
What the paper recipes set is checked against the official runs in tests/test_paper_recipes.py.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
import shlex
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from conftest import REPO

pytest.importorskip("fairseq")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # hydra: schema matching is deprecated

FOLDERS = ("pretrain", "finetune", "linear_eval", "sed")
RECIPES = sorted((folder, p.stem) for folder in FOLDERS for p in (REPO / "config" / folder).glob("*.yaml")
                 if not p.stem.startswith("_"))


def registries() -> Dict[str, Dict[str, Any]]:
    """fairseq's ``_name`` -> config dataclass registries, with the plugin's entries registered."""
    import sslam_plugin.training  # noqa: F401  (registers the plugin's task, model and criterion)
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
    from fairseq.models import MODEL_DATACLASS_REGISTRY
    from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY
    from fairseq.optim.lr_scheduler import LR_SCHEDULER_DATACLASS_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    return {"task": TASK_DATACLASS_REGISTRY, "model": MODEL_DATACLASS_REGISTRY,
            "criterion": CRITERION_DATACLASS_REGISTRY, "optimizer": OPTIMIZER_DATACLASS_REGISTRY,
            "lr_scheduler": LR_SCHEDULER_DATACLASS_REGISTRY}


def composed(config_dir: Path, name: str, overrides: Tuple[str, ...] = ()):
    """The config ``fairseq-hydra-train --config-dir CONFIG_DIR --config-name NAME OVERRIDES`` composes."""
    from fairseq.dataclass.initialize import hydra_init

    hydra_init(name)  # fairseq registers its schema under the recipe's name, as fairseq-hydra-train does
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=True)


def strict_section(node: Any, registry: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``node`` merged into the dataclass its ``_name`` names, in struct mode (as fairseq builds it)."""
    if isinstance(node, str):  # `lr_scheduler: pass_through`
        node = {"_name": node}
    name = node.get("_name")
    assert name in registry, f"{where}._name={name!r} is not registered with fairseq"
    try:
        merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(registry[name]), node))
    except Exception as error:  # omegaconf's key and validation errors
        raise AssertionError(f"{where}: {error}".splitlines()[0]) from None
    if name == "composite":
        from fairseq.optim.composite import OptimizerAndSchedulerConfig

        optimizers, schedulers = registries()["optimizer"], registries()["lr_scheduler"]
        for group, settings in merged["groups"].items():
            at = f"{where}.groups.{group}"
            try:
                settings = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(OptimizerAndSchedulerConfig), settings))
            except Exception as error:
                raise AssertionError(f"{at}: {error}".splitlines()[0]) from None
            settings["optimizer"] = strict_section(settings["optimizer"], optimizers, f"{at}.optimizer")
            if settings["lr_scheduler"] is not None:
                settings["lr_scheduler"] = strict_section(settings["lr_scheduler"], schedulers, f"{at}.lr_scheduler")
            merged["groups"][group] = settings
    return merged


def strict_config(cfg) -> Dict[str, Any]:
    """The job config as fairseq builds it: every keyed part checked against its dataclass and
    completed with its defaults; ``hydra`` as composed (unresolved)."""
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    job = OmegaConf.to_container(cfg, resolve=False)
    job.pop("hydra")
    job = OmegaConf.to_container(OmegaConf.create(job), resolve=True)  # as fairseq-hydra-train does
    for section, registry in registries().items():
        job[section] = strict_section(job[section], registry, section)
    return {**job, "hydra": hydra}


@functools.lru_cache(maxsize=None)
def recipe(folder: str, name: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A shipped recipe as hydra composes it (unresolved) and as fairseq builds it (:func:`strict_config`)."""
    cfg = composed(REPO / "config" / folder, name)
    return OmegaConf.to_container(cfg, resolve=False), strict_config(cfg)


def recipe_config(folder: str, name: str) -> Dict[str, Any]:
    return recipe(folder, name)[1]


def has_key(config: Dict[str, Any], key: str) -> bool:
    node: Any = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def override_error(folder: str, name: str, token: str) -> Optional[str]:
    """Why hydra or fairseq would refuse ``token`` (``[+|++]KEY=VALUE``) for a recipe; None if neither would."""
    prefix, key = re.match(r"(\+{0,2})([^=]+)=", token).groups()
    in_recipe = has_key(recipe(folder, name)[0], key)
    if not has_key(recipe_config(folder, name), key):
        return f"{folder}/{name}: {token}: no setting {key}"
    if prefix == "" and not in_recipe:
        return f"{folder}/{name}: {token}: the recipe does not list {key}; write ++{key}=..."
    if prefix == "+" and in_recipe:
        return f"{folder}/{name}: {token}: the recipe already lists {key}; + only adds, write {key}=... or ++{key}=..."
    return None


@pytest.mark.parametrize("folder, name", RECIPES)
def test_recipe_names_only_real_settings_and_starts_the_plugin(folder, name):
    config = recipe_config(folder, name)  # fails on a misspelled key or a value of the wrong type
    assert config["task"]["data"] == "???"  # the user names the data on the command line
    assert config["common"]["user_dir"] == "sslam_plugin"  # fairseq imports the plugin in every process
    from hydra.experimental.callback import Callback

    targets = [c["_target_"] for c in config["hydra"]["callbacks"].values()]
    assert targets, "no launch callback: the plugin's process start-up would not run"
    for target in targets:
        module, _, attr = target.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), attr), Callback), target


def test_a_misspelled_recipe_key_is_refused(tmp_path):
    shutil.copytree(REPO / "config" / "pretrain", tmp_path / "pretrain")
    recipe = tmp_path / "pretrain" / "demo_stage1.yaml"
    recipe.write_text(recipe.read_text().replace("\n    depth: 4", "\n    dpeth: 4"))
    with pytest.raises(AssertionError, match="model: .*dpeth"):
        strict_config(composed(tmp_path / "pretrain", "demo_stage1"))
    wrong_type = tmp_path / "pretrain" / "demo_stage1.yaml"
    wrong_type.write_text(recipe.read_text().replace("dpeth: 4", "depth: four"))
    with pytest.raises(AssertionError, match="model: .*four"):
        strict_config(composed(tmp_path / "pretrain", "demo_stage1"))


def test_override_rules_of_hydra_and_fairseq():
    assert override_error("pretrain", "demo_stage2", "optimization.max_update=5") is None
    assert override_error("pretrain", "demo_stage2", "++model.fast_step=false") is None
    assert "write ++model.fast_step" in override_error("pretrain", "demo_stage2", "model.fast_step=false")
    assert "no setting model.fast_stpe" in override_error("pretrain", "demo_stage2", "++model.fast_stpe=false")
    assert "+ only adds" in override_error("pretrain", "demo_stage2", "+optimization.max_update=5")
    assert override_error("finetune", "demo", "++model.layer_decay_front_end=true") is None


@pytest.mark.parametrize("group, name", [("pretrain", "demo_stage2"), ("finetune", "demo"), ("linear_eval", "demo")])
def test_every_listed_option_takes_a_new_value_on_the_command_line(group, name):
    """``sslam-config-dir --options`` lists the plugin's options; ``++KEY=VALUE`` sets each one, also
    when the recipe does not list it, and fairseq builds the part with the new value."""
    from sslam_plugin.cli.config_dir import recipe_options

    options = recipe_options(group)
    assert "model.encoder.dropout" in [key for key, _, _ in options]
    assert ("task.preflight_clips" in [key for key, _, _ in options]) == (group == "pretrain")
    config = recipe_config(group, name)
    new = {}
    for key, _, _ in options:
        assert has_key(config, key), f"sslam-config-dir lists {key}, which {group}/{name} does not have"
        value = OmegaConf.select(OmegaConf.create(config), key)
        if isinstance(value, bool):
            new[key] = not value
        elif isinstance(value, (int, float)):
            new[key] = value + 3
    assert len(new) > 20
    overrides = tuple(f"++{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in new.items())
    changed = OmegaConf.create(strict_config(composed(REPO / "config" / group, name, overrides)))
    wrong = [key for key, value in new.items() if OmegaConf.select(changed, key) != value]
    assert not wrong


def test_config_dir_lists_the_options_with_their_defaults(capsys):
    from sslam_plugin.cli.config_dir import main

    assert main(["--options", "pretrain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# options of the pretrain recipes") and "++" in lines[0]
    assert "model.mixing.num_unmixed_windows=2  # windows per clip left unmixed" in lines
    assert any(line.startswith("model.fast_step=true  # ") for line in lines)  # spelled as hydra reads it
    assert main(["--options", "nowhere"]) == 2


def flat_keys(node: dict, prefix: str = "") -> set:
    keys = set()
    for key, value in node.items():
        if isinstance(value, dict) and value:
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


@pytest.mark.parametrize("folder, name", RECIPES)
def test_recipes_never_repeat_a_shared_key(folder, name):
    """The recipe comes first in its defaults list: a key it repeated from a later entry would be
    overridden silently, and the shared files must not overlap either."""
    path = REPO / "config" / folder
    recipe = yaml.safe_load((path / f"{name}.yaml").read_text())
    defaults = recipe.pop("defaults")
    assert defaults[:2] == ["_self_", "_base@_here_"], defaults
    parts = [flat_keys(recipe)] + [
        flat_keys(yaml.safe_load((path / f"{entry.split('@')[0]}.yaml").read_text())) for entry in defaults[1:]
    ]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not parts[i] & parts[j], (defaults, sorted(parts[i] & parts[j]))


# --- overrides shown or used anywhere in the project ---------------------------------------------

SECTIONS = ("hydra", *(f.name for f in dataclasses.fields(importlib.import_module("fairseq.dataclass.configs").FairseqConfig)))
OVERRIDE = re.compile(r"(?<![\w.$/{-])(\+{0,2}(?:%s)(?:\.\w+)+)=" % "|".join(SECTIONS))
# keys that are deliberately not settings: old names the plugin maps or refuses with a message
LEGACY_KEYS = {"model.prediction_mode"}


def override_sources() -> List[Path]:
    this = Path(__file__).resolve()
    files = [REPO / "README.md", REPO / "Makefile", *REPO.joinpath("docs").rglob("*.md"),
             *REPO.joinpath("config").rglob("*.yaml"), *REPO.joinpath("scripts").rglob("*.py"),
             *(p for p in REPO.joinpath("benchmarks").rglob("*") if p.suffix in (".sh", ".py", ".md")),
             *REPO.joinpath("sslam_plugin").rglob("*.py"), *REPO.joinpath("tests").glob("*.py")]
    return sorted({p for p in files if p.resolve() != this and p.is_file()})


def overrides_in(text: str) -> Iterator[Tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        for match in OVERRIDE.finditer(line):
            yield number, match.group(1) + "="


def test_the_override_scan_finds_overrides():
    sample = 'x = ["task.data=/d", f"++model.fast_step={v}"]  # cfg.model.x=1, $(A).b=2\n`common.cpu=true`'
    assert list(overrides_in(sample)) == [(1, "task.data="), (1, "++model.fast_step="), (2, "common.cpu=")]


def test_every_override_in_the_project_names_a_setting():
    configs = [recipe_config(folder, name) for folder, name in RECIPES]
    wrong, checked = [], 0
    for path in override_sources():
        for number, token in overrides_in(path.read_text()):
            checked += 1
            key = token.lstrip("+")[:-1]
            if key not in LEGACY_KEYS and not any(has_key(config, key) for config in configs):
                wrong.append(f"{path.relative_to(REPO)}:{number}: {token}")
    assert checked > 200
    assert not wrong, "overrides of settings no recipe has:\n" + "\n".join(wrong)


def hydra_train_commands(text: str) -> Iterator[Tuple[int, List[str]]]:
    """(line, arguments) of each ``fairseq-hydra-train`` command in a text (markdown, or comments)."""
    lines = [re.sub(r"^\s*#", "", line) for line in text.splitlines()]
    for number, line in enumerate(lines, 1):
        if "fairseq-hydra-train" not in line:
            continue
        command = line.split("fairseq-hydra-train", 1)[1]
        following = number
        while command.rstrip().endswith("\\") and following < len(lines):
            command = command.rstrip()[:-1] + " " + lines[following]
            following += 1
        command = command.split("`")[0]
        try:
            yield number, shlex.split(command, comments=True)
        except ValueError:
            yield number, command.split()


def test_the_command_scan_finds_commands():
    text = "x\n```\nfairseq-hydra-train --config-dir config/finetune --config-name as20k \\\n  a.b=1 \\\n c.d=2 # e.f=3\n"
    assert list(hydra_train_commands(text)) == [
        (3, ["--config-dir", "config/finetune", "--config-name", "as20k", "a.b=1", "c.d=2"])]


def test_documented_commands_follow_the_override_rules():
    docs = [REPO / "README.md", *REPO.joinpath("docs").rglob("*.md"), *REPO.joinpath("config").rglob("*.yaml")]
    wrong, checked = [], 0
    for path in sorted(set(docs)):
        for number, args in hydra_train_commands(path.read_text()):
            options = dict(zip(args, args[1:]))
            folder = Path(options.get("--config-dir", "")).name
            name = options.get("--config-name", "")
            if (folder, name) not in RECIPES:
                continue
            for token in args:
                if "=" in token and not token.startswith("-"):
                    checked += 1
                    error = override_error(folder, name, token)
                    if error:
                        wrong.append(f"{path.relative_to(REPO)}:{number}: {error}")
    assert checked > 20
    assert not wrong, "\n".join(wrong)
