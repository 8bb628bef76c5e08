"""Guards of the layout (STYLE.md "Shape" and "Code"): function shape, no import cycles,
dependencies pointing one way, the distributed backends confined to distrec/distributed/, and
a docstring on everything public.

Everything is read with `ast` from the source files; nothing is imported.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "distrec"
MAX_PARAMS = 6
MAX_LINES = 60
SHAPE_EXEMPTION = "# shape:"

# package -> the distrec packages it must not import (STYLE.md "Dependencies point one way").
FORBIDDEN = {
    "models": {"train", "tune", "distributed", "cli"},
    "data": {"models", "train", "tune", "cli"},
    "eval": {"train", "tune", "cli"},
    "distributed": {"train", "tune", "models", "data", "cli"},
}
# config may import only itself and utils (the root `distrec` module, `__version__`, is fine).
CONFIG_MAY_IMPORT = {"config", "utils", ""}
BACKEND_TEXT = re.compile(r"\bdeepspeed\b|\btorch\.distributed\b")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


# --- (a) function shape ----------------------------------------------------------------------


def _parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = fn.args
    named = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    named = [name for name in named if name not in ("self", "cls")]
    return len(named) + (args.vararg is not None) + (args.kwarg is not None)


def _exempt(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    around = lines[max(0, fn.lineno - 2) : fn.lineno]  # the line above and the `def` line
    return any(SHAPE_EXEMPTION in line for line in around)


def shape_violations() -> list[str]:
    """`file:line name: why` for every over-long or over-wide function without an exemption."""
    found = []
    for path in _sources("distrec", "perf"):
        lines = path.read_text().splitlines()
        for fn in ast.walk(_tree(path)):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or _exempt(lines, fn):
                continue
            params, span = _parameter_count(fn), fn.end_lineno - fn.lineno + 1
            if params > MAX_PARAMS:
                found.append(f"{_where(path, fn)} {fn.name}: {params} parameters")
            if span > MAX_LINES:
                found.append(f"{_where(path, fn)} {fn.name}: {span} lines")
    return found


def test_functions_are_small_and_narrow():
    found = shape_violations()
    assert not found, (
        f"functions over {MAX_PARAMS} parameters or {MAX_LINES} lines (split them, group "
        f"parameters in a dataclass, or justify with `{SHAPE_EXEMPTION} <reason>` on the def "
        f"line):\n  " + "\n  ".join(found)
    )


# --- (b) import graph --------------------------------------------------------------------------


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement may refer to (modules, or module.attribute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


@cache
def import_graph() -> dict[str, set[str]]:
    """distrec module -> the distrec modules it imports (module- and function-level alike)."""
    paths = {_module_name(p): p for p in _sources("distrec")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(_tree(path)):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _imported(node, name, is_package)
            # `from pkg import mod` names the module; `from mod import attr` the module.
            modules = [t for t in targets[:-1] if t in paths] if len(targets) > 1 else []
            if isinstance(node, ast.Import):
                modules = [_longest_module(t, paths) for t in targets]
            elif not modules:
                modules = [_longest_module(targets[-1], paths)]
            graph[name].update(m for m in modules if m and m != name)
    return graph


def _longest_module(dotted: str, modules: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def import_cycles() -> list[list[str]]:
    """One cycle (as a path a -> b -> ... -> a) per strongly connected group of modules."""
    graph = import_graph()
    reach = {module: _reachable(module, graph) for module in graph}
    cycles, seen = [], set()
    for start in sorted(graph):
        if start in seen or start not in reach[start]:
            continue
        cycles.append(_cycle_through(start, graph))
        seen.update(m for m in reach[start] if start in reach[m])  # start's whole group
    return cycles


def _reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    found, stack = set(), [start]
    while stack:
        for target in graph[stack.pop()]:
            if target not in found:
                found.add(target)
                stack.append(target)
    return found


def _cycle_through(start: str, graph: dict[str, set[str]]) -> list[str]:
    """A shortest import path from `start` back to itself (breadth-first)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is on no cycle")


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles (a loop of imports is a design bug):\n  " + "\n  ".join(
        " -> ".join(cycle) for cycle in cycles
    )


# --- (c) layering ------------------------------------------------------------------------------


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layering_violations() -> list[str]:
    """`importer -> imported` for every import against the one-way dependency rules."""
    found = []
    for module, targets in sorted(import_graph().items()):
        package = _package_of(module)
        for target in sorted(targets):
            imported = _package_of(target)
            if imported == package:
                continue
            if imported in FORBIDDEN.get(package, set()) or (
                package == "config" and imported not in CONFIG_MAY_IMPORT
            ):
                found.append(f"{module} -> {target}")
    found += _outside_imports()
    return found


def _outside_imports() -> list[str]:
    """distrec must not import perf/ or tests/ (they ship with the checkout, not the wheel)."""
    found = []
    for path in _sources("distrec"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    if name.split(".")[0] in ("perf", "tests") and not getattr(node, "level", 0):
                        found.append(f"{_where(path, node)} imports {name}")
    return found


def test_dependencies_point_one_way():
    found = layering_violations()
    assert not found, "imports against the layering (STYLE.md):\n  " + "\n  ".join(found)


# --- (d) distributed backends ------------------------------------------------------------------


def backend_mentions() -> list[str]:
    """`file:line` for each `deepspeed` / `torch.distributed` outside distrec/distributed/."""
    found = []
    for path in _sources("distrec"):
        if path.is_relative_to(PACKAGE / "distributed"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if BACKEND_TEXT.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
        for node in ast.walk(_tree(path)):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "torch"
                and any(alias.name == "distributed" for alias in node.names)
            ):
                found.append(f"{_where(path, node)}: from torch import distributed")
    return found


def test_backends_only_in_distributed():
    found = backend_mentions()
    assert not found, (
        "deepspeed / torch.distributed outside distrec/distributed/ (model and training code "
        "does not know the backend):\n  " + "\n  ".join(found)
    )


# --- (e) docstrings ----------------------------------------------------------------------------


def undocumented() -> list[str]:
    """`file:line name` for every public module-level function or class, and every public
    method or property of a module-level class, that has no docstring."""
    found = []
    for path in _sources("distrec"):
        for node in _tree(path).body:
            members = [node]
            if isinstance(node, ast.ClassDef):
                if not node.name.startswith("_") and not ast.get_docstring(node):
                    found.append(f"{_where(path, node)} class {node.name}")
                members = node.body
            for fn in members:
                if (
                    isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                    and not fn.name.startswith("_")
                    and not ast.get_docstring(fn)
                ):
                    found.append(f"{_where(path, fn)} {fn.name}")
    return found


def test_public_functions_have_docstrings():
    found = undocumented()
    assert not found, (
        "public functions, methods and classes without a docstring (one line on what it is "
        "or does; Args/Returns only where not obvious):\n  " + "\n  ".join(found)
    )
