"""Every paper recipe does what the official run did.

``tests/data/official_recipes.json`` holds, per recipe, the official runs' settings as this
project's config keys, each with the file and line of the public code or run config it was read
from. Each recipe is composed as ``fairseq-hydra-train`` composes it (with the command line its
header comment gives), its values resolved and the plugin's task, model and criterion defaults
filled in as fairseq does when it builds them, and compared with those settings;
``docs/recipes.md`` must show the same values.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from typing import Any, Dict, List

import pytest

from conftest import REPO

pytest.importorskip("fairseq")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # hydra: schema matching is deprecated

OFFICIAL = json.loads((REPO / "tests" / "data" / "official_recipes.json").read_text())
DOCS = REPO / "docs" / "recipes.md"
FOLDERS = ("finetune", "linear_eval", "pretrain")
PAPER = sorted(OFFICIAL["recipes"])
CLASSIFICATION = [r for r in PAPER if not r.startswith("pretrain/")]
ABSENT = object()


def entries(recipe: str) -> List[Dict[str, Any]]:
    spec = OFFICIAL["recipes"][recipe]
    return [e for group in spec["include"] for e in OFFICIAL["groups"][group]] + spec["entries"]


def recipe_file(recipe: str):
    folder, name = recipe.split("/")
    return REPO / "config" / folder / f"{name}.yaml"


def header(recipe: str) -> str:
    """The recipe's leading comment, as one line of text."""
    lines = []
    for line in recipe_file(recipe).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def user_overrides(recipe: str) -> List[str]:
    """The KEY=VALUE arguments of the fairseq-hydra-train command in the recipe's header comment."""
    text = header(recipe)
    assert "fairseq-hydra-train" in text, f"{recipe}: no fairseq-hydra-train command in its header comment"
    command = text.split("fairseq-hydra-train", 1)[1].replace("\\", " ")
    return [token for token in shlex.split(command) if "=" in token and not token.startswith("-")]


def plugin_dataclasses(folder: str) -> Dict[str, Any]:
    if folder == "pretrain":
        from sslam_plugin.training.criterion import SSLAMWeightedLossesConfig as criterion
        from sslam_plugin.training.model import SSLAMPretrainingModelConfig as model
        from sslam_plugin.training.task import SSLAMPretrainingTaskConfig as task
    else:
        from sslam_plugin.training.classification_criterion import ClassificationCriterionConfig as criterion
        from sslam_plugin.training.classification_task import ClassificationTaskConfig as task
        from sslam_plugin.training.classifier_model import ClassifierModelConfig as model
    return {"task": task, "model": model, "criterion": criterion}


@functools.lru_cache(maxsize=None)
def effective(recipe: str) -> Dict[str, Any]:
    """The settings a launch of ``recipe`` trains with."""
    from fairseq.dataclass.initialize import hydra_init

    folder, name = recipe.split("/")
    hydra_init(name)  # fairseq registers its schema under the recipe's name, as fairseq-hydra-train does
    with initialize_config_dir(config_dir=str(REPO / "config" / folder), version_base=None):
        cfg = compose(config_name=name, overrides=user_overrides(recipe))
    composed = OmegaConf.to_container(cfg, resolve=True)  # as fairseq-hydra-train does
    # fairseq builds the task, model and criterion from their dataclasses: a key the recipe
    # leaves out takes the dataclass default
    defaults = {section: OmegaConf.to_container(OmegaConf.structured(dc)) for section, dc in plugin_dataclasses(folder).items()}
    return OmegaConf.to_container(OmegaConf.merge(defaults, composed), resolve=True)


def value_at(config: Dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def same(actual: Any, official: Any) -> bool:
    """Equal values of the same kind (a bool is not the number 1; 4 and 4.0 are the same number)."""
    if isinstance(official, bool) or isinstance(actual, bool):
        return type(actual) is type(official) and actual == official
    if isinstance(official, list):
        return isinstance(actual, list) and len(actual) == len(official) and all(map(same, actual, official))
    return actual == official and (official is None) == (actual is None)


def fmt(value: Any) -> str:
    """A value as docs/recipes.md writes it."""
    if value is ABSENT:
        return "(not set)"
    return value if isinstance(value, str) else json.dumps(value)


def test_every_shipped_recipe_is_a_paper_recipe_or_listed_as_not_one():
    shipped = sorted(f"{folder}/{p.stem}" for folder in FOLDERS for p in (REPO / "config" / folder).glob("*.yaml")
                     if not p.stem.startswith("_"))
    listed = sorted(PAPER + list(OFFICIAL["not_paper_recipes"]))
    assert shipped == listed
    assert not set(PAPER) & set(OFFICIAL["not_paper_recipes"])
    for recipe in OFFICIAL["not_paper_recipes"]:  # their own header says so
        assert "not the paper protocol" in header(recipe), recipe
    assert {r.split("/")[0] for r in PAPER} == set(FOLDERS)


def test_official_entries_are_well_formed():
    aliases = "|".join(re.escape(a) for a in OFFICIAL["files"] if a not in ("EAT", "SSLAM", "fairseq"))
    source = re.compile(rf"((EAT|SSLAM|fairseq) \S+|{aliases}):\d+(-\d+)?")
    for recipe in PAPER:
        seen: Dict[str, Any] = {}
        for entry in entries(recipe):
            assert set(entry) == {"key", "official", "source", "note"}, (recipe, entry)
            for part in entry["source"].split("; "):
                assert source.fullmatch(part), (recipe, entry["key"], part)
            if entry["key"] in seen:  # a recipe may cite a shared setting again, never with another value
                assert same(entry["official"], seen[entry["key"]]), (recipe, entry["key"])
            seen[entry["key"]] = entry["official"]


@pytest.mark.parametrize("recipe", PAPER)
def test_recipe_does_what_the_official_run_did(recipe):
    config = effective(recipe)
    wrong = [
        f"{e['key']}: recipe {value_at(config, e['key'])!r}, official {e['official']!r} ({e['source']})"
        for e in entries(recipe)
        if not same(value_at(config, e["key"]), e["official"])
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("recipe", PAPER)
def test_this_projects_switches_are_off(recipe):
    folder = recipe.split("/")[0]
    config = effective(recipe)
    for key in OFFICIAL["switches_off"][folder]:
        assert value_at(config, key) is False, (recipe, key)
    if folder != "pretrain":
        assert value_at(config, "model.patch_mask_ratio") == 0.0
    # the group a switch would fill is there, so one override turns the switch on
    assert value_at(config, "optimizer.groups.no_weight_decay.optimizer.weight_decay") == 0.0


@pytest.mark.parametrize("recipe", ["finetune/as20k", "linear_eval/spass", "pretrain/sslam_stage2"])
def test_a_switch_is_one_override(recipe):
    from fairseq.dataclass.initialize import hydra_init

    folder, name = recipe.split("/")
    hydra_init(name)
    with initialize_config_dir(config_dir=str(REPO / "config" / folder), version_base=None):
        cfg = compose(config_name=name, overrides=[*user_overrides(recipe), "model.exempt_norms_biases_from_decay=true"])
    assert cfg.model.exempt_norms_biases_from_decay is True


def docs_tables() -> Dict[str, List[tuple]]:
    """{table id: [(setting, official cell, this recipe cell)]} of docs/recipes.md's '### `id`' sections."""
    tables: Dict[str, List[tuple]] = {}
    current = None
    for line in DOCS.read_text().splitlines():
        heading = re.match(r"### `([^`]+)`", line)
        if heading:
            current = heading.group(1)
            assert current not in tables, f"two sections for {current}"
            tables[current] = []
        elif line.startswith("## "):
            current = None
        elif current is not None:
            row = re.fullmatch(r"\| `([^`]+)` \| (.+) \| `([^`]*)` \|", line)
            if row:
                tables[current].append(row.groups())
    return tables


def check_rows(table_id: str, rows: List[tuple], expected: List[Dict[str, Any]], recipes: List[str]) -> List[str]:
    wrong = []
    if [r[0] for r in rows] != [e["key"] for e in expected]:
        return [f"{table_id}: rows {[r[0] for r in rows]}, entries {[e['key'] for e in expected]}"]
    for (key, official, ours), entry in zip(rows, expected):
        if not official.startswith(f"`{fmt(entry['official'])}` ({entry['source']})"):
            wrong.append(f"{table_id} {key}: official cell {official!r}, expected `{fmt(entry['official'])}` ({entry['source']})")
        for recipe in recipes:
            if ours != fmt(value_at(effective(recipe), key)):
                wrong.append(f"{table_id} {key}: docs say {ours!r}, {recipe} has {fmt(value_at(effective(recipe), key))!r}")
    return wrong


def test_docs_state_the_official_and_the_recipe_values():
    tables = docs_tables()
    assert sorted(tables) == sorted(PAPER + list(OFFICIAL["groups"]))
    wrong = []
    for group, expected in OFFICIAL["groups"].items():
        users = [r for r in PAPER if group in OFFICIAL["recipes"][r]["include"]]
        wrong += check_rows(group, tables[group], expected, users)
    for recipe in PAPER:
        wrong += check_rows(recipe, tables[recipe], OFFICIAL["recipes"][recipe]["entries"], [recipe])
    assert not wrong, "\n".join(wrong)
    text = DOCS.read_text()
    for alias, path in OFFICIAL["files"].items():
        assert f"| `{alias}` | {path} |" in text, alias
