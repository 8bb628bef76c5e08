"""The config package's import graph: no cycles, no lazy imports, no launcher backends."""

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

CONFIG = ROOT / "distrec" / "config"
LAUNCHER = ROOT / "distrec" / "distributed" / "launcher.py"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level?) for every `distrec...` import of `path`."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distrec"):
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.startswith("distrec")]
    return found


def test_config_modules_import_each_other_eagerly_and_without_a_cycle():
    graph: dict[str, set[str]] = {}
    for path in CONFIG.glob("*.py"):
        name = f"distrec.config.{path.stem}".removesuffix(".__init__")
        deps = _imports(path)
        lazy = [m for m, top in deps if not top]
        assert not lazy, f"{path.name}: imports {lazy} inside a function or TYPE_CHECKING block"
        outside = [m for m, _ in deps if not m.startswith("distrec.config")]
        assert not outside, f"{path.name}: distrec.config may not import {outside}"
        graph[name] = {m for m, _ in deps if m != "distrec.config"}
    order: list[str] = []
    while graph:
        ready = sorted(n for n, deps in graph.items() if not deps - set(order))
        assert ready, f"import cycle among {sorted(graph)}"
        order += ready
        for n in ready:
            del graph[n]


def test_config_does_not_name_launcher_backends():
    for path in CONFIG.rglob("*.py"):
        hits = re.findall(r"deepspeed|torch\.distributed", path.read_text(), flags=re.IGNORECASE)
        assert not hits, f"{path.name} names {hits}; that belongs in distrec/distributed/"


def test_the_launcher_check_depends_only_on_config():
    assert {m for m, _ in _imports(LAUNCHER)} <= {"distrec.config"}
