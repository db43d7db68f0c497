"""``sslam-config-dir --options RECIPE``: the recipe's values as fairseq-hydra-train composes them, in YAML spelling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fairseq")

from sslam_plugin.cli.config_dir import config_dir  # noqa: E402

COMMAND = str(Path(sys.executable).parent / "sslam-config-dir")


def options(name: str) -> dict:
    result = subprocess.run([COMMAND, "--options", name], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no hydra or fairseq noise
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# options of ")
    return dict(line.split("  # ")[0].split("=", 1) for line in lines[1:])


def flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", ["pretrain/demo_stage1", "finetune/as20k", "linear_eval/demo"])
def test_every_value_a_recipe_sets_is_shown_as_the_recipe_sets_it(name):
    folder, stem = name.split("/")
    shown = options(name)
    written = {}
    for path in (config_dir() / folder / f"{stem}.yaml", config_dir() / folder / "_base.yaml"):
        raw = yaml.safe_load(path.read_text()) or {}
        written.update(flat({k: v for k, v in raw.items() if k in ("task", "model", "criterion")}))
    compared = 0
    for key, value in written.items():
        if key not in shown or isinstance(value, str) and value.startswith("${"):
            continue  # fairseq's own keys (_name) and interpolations
        assert yaml.safe_load(shown[key]) == value, key
        compared += 1
    assert compared >= 5


def test_the_recipe_wins_over_the_code_default_and_null_is_spelled_for_hydra():
    defaults = options("pretrain")
    demo = options("demo_stage1")  # a name found in one folder needs no folder
    assert defaults["task.target_length"] == "1024" and demo["task.target_length"] == "256"
    assert demo["task.effective_batch_size"] == "null" and demo["task.data"] == "???"
    assert all(value != "None" and value not in ("True", "False") for value in list(demo.values()) + list(defaults.values()))


def test_an_unknown_or_ambiguous_recipe_is_one_error_line():
    result = subprocess.run([COMMAND, "--options", "demo"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: recipe 'demo' is in several folders; name one: finetune/demo, linear_eval/demo\n"
    result = subprocess.run([COMMAND, "--options", "nope"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: no recipe 'nope'; choose a folder")
    assert "pretrain/eat_stage1" in result.stderr and len(result.stderr.splitlines()) == 1
