"""The structure drawn from the imports: no import circle in the package, and no import running back up a layer.

The graph is read from the source (every ``import``, also inside functions, except those
under ``if TYPE_CHECKING:``, which never run), so it holds whatever a test happens to import.
Layers, lowest first: the core (plain PyTorch maths and data), checkpoints and inference, the
fairseq training layer, the command lines. The package's root (``sslam_plugin/__init__.py``,
the public face that loads the encoder or registers with fairseq on demand, inside its functions)
stands above the layers: it may import any of them, and no module imports it (the version lives
in ``sslam_plugin/_version.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

from conftest import REPO

PACKAGE = REPO / "sslam_plugin"
CORE = {
    "_version", "features", "masking", "mixing", "randomness", "augment", "metrics", "config_utils", "progress",
    "vocabulary",
    "models", "data",
}
NEAR_CORE = {
    "checkpoints", "inference", "waveform", "hear", "clips", "evaluation", "probe", "training_log", "export", "detection",
}
LAYERS = {0: "core", 1: "checkpoints/inference", 2: "training", 3: "cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST, parents: Dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The package's modules that ``name`` imports (a submodule where ``from X import Y`` names one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and not _type_checking_only(node, parents):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not _type_checking_only(node, parents):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {m for m in found if m in known and m != name}


ROOT = "sslam_plugin"


def import_graph() -> Dict[str, Set[str]]:
    """module -> the package's modules it imports; the root left out (see the module docstring)."""
    known = modules()
    graph = {name: imports_of(name, path, set(known)) for name, path in known.items() if name != ROOT}
    return {name: targets - {ROOT} for name, targets in graph.items()}


def layer(name: str) -> int:
    top = name.split(".")[1]
    if top in CORE:
        return 0
    if top in NEAR_CORE:
        return 1
    if top == "training":
        return 2
    if top == "cli":
        return 3
    raise AssertionError(f"{name}: a module the layer table does not know; add it to a layer in {__file__}")


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    # function-level imports count: the launcher's rank imports fairseq's process start-up inside a function
    assert "sslam_plugin.training.processes" in graph["sslam_plugin.training.fairseq_adapter"]
    assert "sslam_plugin.training.launch_options" in graph["sslam_plugin.training.task"]
    assert "sslam_plugin.checkpoints" in graph["sslam_plugin.training.launch_paths"]  # inside a function
    # and a circle is found when there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_module_imports_the_package_root():
    known = modules()
    importers = sorted(name for name, path in known.items()
                       if name != ROOT and ROOT in imports_of(name, path, set(known)))
    assert not importers, f"these modules import the package root (a circle through it): {importers}"


def test_no_import_runs_back_up_a_layer():
    upward = [
        f"{name} ({LAYERS[layer(name)]}) imports {target} ({LAYERS[layer(target)]})"
        for name, targets in import_graph().items()
        for target in sorted(targets) if layer(target) > layer(name)
    ]
    assert upward == []
