"""The recipes in config/ compose (recipe + the folder's _base.yaml) to exactly the complete
configs they replaced (tests/data/recipes_expanded), as fairseq-hydra-train composes them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytest.importorskip("fairseq")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # hydra: schema matching is deprecated

EXPANDED = REPO / "tests" / "data" / "recipes_expanded"
RECIPES = sorted((p.parent.name, p.stem) for p in EXPANDED.glob("*/*.yaml"))


def composed(config_dir: Path, name: str) -> dict:
    """The job config and the hydra settings fairseq-hydra-train would run with."""
    from fairseq.dataclass.initialize import hydra_init

    hydra_init(name)  # fairseq registers its schema under the recipe's name, as fairseq-hydra-train does
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name=name, return_hydra_config=True)
    hydra = {"run.dir": cfg.hydra.run.dir, "callbacks": OmegaConf.to_container(cfg.hydra.callbacks)}
    job = OmegaConf.to_container(cfg, resolve=False)
    job.pop("hydra")
    return {"job": job, "hydra": hydra}


def flat_keys(node: dict, prefix: str = "") -> set:
    keys = set()
    for key, value in node.items():
        if isinstance(value, dict) and value:
            keys |= flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_every_recipe_is_covered():
    shipped = sorted((p.parent.name, p.stem) for p in (REPO / "config").glob("*/*.yaml")
                     if p.parent.name != "run_config" and not p.stem.startswith("_") and not p.parent.name.startswith("_"))
    assert shipped == RECIPES


@pytest.mark.parametrize("group, name", RECIPES)
def test_recipe_composes_to_the_complete_config_it_replaces(group, name):
    recipe, complete = composed(REPO / "config" / group, name), composed(EXPANDED / group, name)
    assert recipe == complete
    assert recipe["job"]["task"]["data"] == "???" and recipe["job"]["optimizer"]["_name"] == "composite"


@pytest.mark.parametrize("group, name", RECIPES)
def test_recipes_never_repeat_a_shared_key(group, name):
    """The recipe comes first in its defaults list: a key it repeated from a later entry would be
    overridden silently, and the shared files must not overlap either."""
    folder = REPO / "config" / group
    recipe = yaml.safe_load((folder / f"{name}.yaml").read_text())
    defaults = recipe.pop("defaults")
    assert defaults[:2] == ["_self_", "_base@_here_"], defaults
    parts = [flat_keys(recipe)] + [
        flat_keys(yaml.safe_load((folder / f"{entry.split('@')[0]}.yaml").read_text())) for entry in defaults[1:]
    ]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not parts[i] & parts[j], (defaults, sorted(parts[i] & parts[j]))


@pytest.mark.parametrize("group, name", [("pretrain", "demo_stage2"), ("finetune", "demo"), ("linear_eval", "demo")])
def test_every_listed_option_can_be_set_on_the_command_line(group, name):
    """``sslam-config-dir --options`` lists the plugin's options; each one takes ``++KEY=VALUE``, also
    when the recipe does not list it (plain ``KEY=VALUE`` is refused for those: not in struct)."""
    from fairseq.dataclass.initialize import hydra_init

    from sslam_plugin.cli.config_dir import recipe_options

    options = [key for key, default, _ in recipe_options(group) if not str(default).startswith("${")]
    assert "model.encoder.dropout" in options and ("task.preflight_clips" in options) == (group == "pretrain")
    hydra_init(name)
    overrides = [f"++{key}=12345" for key in options]
    with initialize_config_dir(config_dir=str(REPO / "config" / group), version_base=None):
        cfg = compose(config_name=name, overrides=overrides)
    for key in options:
        assert OmegaConf.select(cfg, key) == 12345, key


def test_config_dir_lists_the_options_with_their_defaults(capsys):
    from sslam_plugin.cli.config_dir import main

    assert main(["--options", "pretrain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# options of the pretrain recipes") and "++" in lines[0]
    assert "model.mixing.num_unmixed_windows=2  # windows per clip left unmixed" in lines
    assert any(line.startswith("model.fast_step=True  # ") for line in lines)
    assert main(["--options", "nowhere"]) == 2
