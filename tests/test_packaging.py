"""The installed distribution: console commands, shipped recipes, no path tricks.

``make venv`` installs the package non-editably into .venv, as a user's
``pip install`` would; these tests look at that installed copy.
"""

from __future__ import annotations

import ast
import importlib
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO, run, venv_bin

COMMANDS = {
    "sslam-prepare-manifest", "sslam-prepare-labels", "sslam-validate-manifest", "sslam-extract", "sslam-infer",
    "sslam-evaluate", "sslam-convert", "sslam-norm-stats", "sslam-submit", "sslam-benchmark", "sslam-config-dir",
    "sslam-plot-training", "sslam-make-polyphonic", "sslam-plot-mixture",
}


def installed_distribution() -> metadata.Distribution:
    try:
        dist = metadata.distribution("sslam-plugin")
    except metadata.PackageNotFoundError:
        pytest.skip("sslam-plugin is not installed in this environment (run `make venv`)")
    if any(f.name == "direct_url.json" for f in dist.files or []) and '"editable": true' in (
        dist.read_text("direct_url.json") or ""
    ):
        pytest.skip("an editable install; these tests check a regular install")
    return dist


def declared_commands() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_pyproject_declares_every_user_facing_command():
    assert set(declared_commands()) == COMMANDS


def test_every_command_is_installed_and_points_at_a_main_function():
    dist = installed_distribution()
    installed = {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}
    assert set(installed) == COMMANDS
    for name, ep in installed.items():
        assert ep.value == declared_commands()[name]
        module = importlib.import_module(ep.module)
        assert callable(getattr(module, ep.attr)), name
        assert Path(venv_bin(name)).is_file(), f"{name} is not on the venv's PATH"


@pytest.mark.parametrize("name", ["sslam-convert", "sslam-extract", "sslam-prepare-labels", "sslam-benchmark"])
def test_commands_answer_help_from_any_folder(name, tmp_path):
    result = run([venv_bin(name), "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage" in (result.stdout + result.stderr).lower()


def test_the_recipes_ship_inside_the_package_and_match_the_checkout(tmp_path):
    installed_distribution()
    result = run([venv_bin("sslam-config-dir")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shipped = Path(result.stdout.strip())
    assert shipped.is_dir() and shipped.name == "config"
    checkout = REPO / "config"
    recipes = sorted(p.relative_to(checkout) for p in checkout.rglob("*.yaml"))
    assert len(recipes) > 20
    for rel in recipes:  # the finetune/_datasets links arrive as real folders
        assert (shipped / rel).read_text() == (checkout / rel).read_text(), rel
    assert run([venv_bin("sslam-config-dir"), "pretrain"], cwd=tmp_path).stdout.strip() == str(shipped / "pretrain")
    bad = run([venv_bin("sslam-config-dir"), "nonsense"], cwd=tmp_path)
    assert bad.returncode == 2 and "pretrain" in bad.stderr


def test_an_installed_recipe_composes_from_another_folder(tmp_path):
    """What `fairseq-hydra-train --config-dir "$(sslam-config-dir)/finetune"` composes, away from the checkout."""
    pytest.importorskip("fairseq")
    shipped = run([venv_bin("sslam-config-dir"), "finetune"], cwd=tmp_path).stdout.strip()
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        f"with initialize_config_dir(config_dir={shipped!r}, version_base=None):\n"
        "    cfg = compose(config_name='esc50')\n"
        "print(cfg.task._name, cfg.model._name, cfg.task.target_length)\n"
    )
    result = run([sys.executable, "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["sslam_classification", "sslam_classifier", "512"]


def sys_path_edits(path: Path) -> list:
    """Lines of ``path`` that call a method of ``sys.path`` or assign to it."""
    def is_sys_path(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"

    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Assign) and any(is_sys_path(target) for target in node.targets):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_sys_path_check_finds_an_edit(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import sys\nsys.path.insert(0, 'x')\nsys.path = []\nprint(sys.argv)\n")
    assert sys_path_edits(sample) == [2, 3]


def test_no_module_or_script_edits_sys_path():
    """Commands import the installed package; a sys.path edit would silently run another copy."""
    files = [*REPO.joinpath("sslam_plugin").rglob("*.py"), *REPO.joinpath("scripts").glob("*.py")]
    offenders = {str(path.relative_to(REPO)): lines for path in files if (lines := sys_path_edits(path))}
    assert not offenders
