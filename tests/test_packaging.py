"""The distribution: console commands, shipped recipes, one version, a clean build, no path tricks.

``make venv`` installs the package non-editably into .venv, as a user's ``pip install`` would;
the tests that look at that installed copy skip for an editable install. The others read
pyproject.toml, run the declared commands, or build a wheel from a copy of the checkout
without installing it.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import sslam_plugin
from conftest import REPO, run, venv_bin

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


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
    return PYPROJECT["project"]["scripts"]


def test_every_command_module_is_declared_or_reached_from_a_declared_command():
    """A module of sslam_plugin/cli with a ``main`` is a command: declared in pyproject.toml, or
    run by a declared one (``sslam-benchmark pretraining``)."""
    targets = {value.split(":")[0] for value in declared_commands().values()}
    missing = sorted(t for t in targets if not (REPO / (t.replace(".", "/") + ".py")).is_file())
    assert not missing, f"[project.scripts] names modules that do not exist: {missing}"
    sources = "\n".join((REPO / (t.replace(".", "/") + ".py")).read_text() for t in targets if t.startswith("sslam_plugin."))
    unreachable = []
    for path in sorted((REPO / "sslam_plugin" / "cli").glob("*.py")):
        module = f"sslam_plugin.cli.{path.stem}"
        tree = ast.parse(path.read_text())
        has_main = any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)
        if has_main and module not in targets and module not in sources:
            unreachable.append(module)
    assert not unreachable, f"command modules no declared command runs: {unreachable} (add them to [project.scripts])"


HELP_RUNNER = """
import contextlib, importlib, io, json, sys
results = {}
for name, target in json.loads(sys.argv[1]).items():
    module, attr = target.split(":")
    out = io.StringIO()
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = getattr(importlib.import_module(module), attr)()
        except SystemExit as stop:
            code = stop.code
        except Exception as error:
            code = f"{type(error).__name__}: {error}"
    results[name] = [code or 0, out.getvalue()]
print(json.dumps(results))
"""


def test_every_declared_command_answers_help(tmp_path):
    """Each [project.scripts] target, called as its console script calls it, from another folder."""
    commands = declared_commands()
    result = run([sys.executable, "-c", HELP_RUNNER, json.dumps(commands)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(answers) == sorted(commands)
    for name, (code, text) in answers.items():
        assert code == 0, f"{name} --help exited with {code}: {text[-500:]}"
        assert name in text, f"{name} --help does not name the command: {text[:300]!r}"


def test_every_command_is_installed_and_points_at_a_main_function(tmp_path):
    """Installed copy: the console scripts are the declared ones, and each runs from another folder."""
    dist = installed_distribution()
    installed = {ep.name: ep for ep in dist.entry_points if ep.group == "console_scripts"}
    assert set(installed) == set(declared_commands())
    for name, ep in installed.items():
        assert ep.value == declared_commands()[name]
        assert Path(venv_bin(name)).is_file(), f"{name} is not on the venv's PATH"
        result = run([venv_bin(name), "--help"], cwd=tmp_path)
        assert result.returncode == 0 and name in result.stdout + result.stderr, (name, result.stderr[-2000:])


def test_one_version_source():
    """pyproject.toml reads the version from the package, so exports record the released version."""
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sslam_plugin._version.__version__"}
    parts = sslam_plugin.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts), sslam_plugin.__version__
    try:
        installed = metadata.version("sslam-plugin")
    except metadata.PackageNotFoundError:
        return
    assert installed == sslam_plugin.__version__, "the installed metadata is stale: reinstall (make venv)"


def test_a_wheel_build_leaves_the_checkout_clean_and_ships_the_whole_package(tmp_path):
    """pip builds in the source tree; setup.py sends setuptools' build/ and *.egg-info elsewhere."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, copy / name)
    shutil.copytree(REPO / "sslam_plugin", copy / "sslam_plugin", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    result = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                  "-q", "-w", str(tmp_path / "wheels"), str(copy)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before, "the build wrote into the checkout"
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name == f"sslam_plugin-{sslam_plugin.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {p.relative_to(copy).as_posix() for p in (copy / "sslam_plugin").rglob("*")
               if p.is_file() and p.suffix in (".py", ".yaml", ".csv", ".typed")}
    assert package - names == set(), "files of the package missing from the wheel"
    info = f"sslam_plugin-{sslam_plugin.__version__}.dist-info"
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert sorted(line.split(" = ")[0] for line in entry_points.splitlines() if " = " in line) == sorted(declared_commands())


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
