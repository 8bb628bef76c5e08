"""Every config field is read by the code: a field nobody reads is a bug (STYLE.md).

The source of distrec/ outside distrec/config/ is scanned with `ast`. A field counts as
read where some `<receiver>.<field>` names it and the receiver can be that field's section:

- an attribute that is the section's key: `cfg.train.log_every`, `run.cfg.stages.adapt.mode`
  (any receiver for a top-level field);
- a parameter annotated with the section's class: `def f(cfg: ModelConfig): cfg.dim`;
- another variable, call or subscript (`st.adapt`, `cfg.data.domains[0].items`): an alias
  the scan cannot follow, unless it is a parameter annotated with a non-config type.

It also counts as read where a string constant equals its name, for `getattr(d, "items")`
and `model_copy(update={...})`.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from typing import NamedTuple, get_origin

import pytest
from pydantic import BaseModel

from distrec.config import schema
from distrec.config.docs import section_of
from distrec.config.schema import RunConfig
from tests.conftest import ROOT

PACKAGE = ROOT / "distrec"
SECTIONS = {n for n in schema.__all__ if n.endswith("Config") or n == "ColumnMap"}
# Fields whose readers other engineers are writing right now.
NEW_FIELDS: set[str] = set()  # fields whose reader is still being written (none now)

ALIAS = ("alias",)


class FieldPath(NamedTuple):
    path: str  # data.domains[].columns.user
    name: str  # user
    parent: str | None  # the section's key (columns), None at top level
    owner: str  # the section's class (ColumnMap)


def field_paths(model: type[BaseModel], prefix: str = "") -> list[FieldPath]:
    """Every field of `model`, nested sections and items of lists of sections included."""
    out = []
    parent = prefix.rsplit(".", 1)[-1].removesuffix("[]") if prefix else None
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        out.append(FieldPath(path, name, parent, model.__name__))
        nested = section_of(field.annotation)
        if nested is not None:
            items = "[]" if get_origin(field.annotation) is list else ""
            out += field_paths(nested, path + items)
    return out


class _Reads(ast.NodeVisitor):
    """attribute name -> how its receivers look; plus every string constant."""

    def __init__(self) -> None:
        self.attrs: dict[str, set[tuple]] = defaultdict(set)
        self.strings: set[str] = set()
        self.params: list[dict[str, set[str] | None]] = [{}]

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        a = node.args
        scope = dict(self.params[-1])
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                ann = ast.unparse(arg.annotation) if arg.annotation is not None else None
                scope[arg.arg] = None if ann is None else set(re.findall(r"\b[A-Z]\w*", ann))
        self.params.append(scope)
        self.generic_visit(node)
        self.params.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.attrs[node.attr].add(self._receiver(node.value))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.strings.add(node.value)

    def _receiver(self, node: ast.expr) -> tuple:
        if isinstance(node, ast.Attribute):
            return ("key", node.attr)
        if isinstance(node, ast.Name) and self.params[-1].get(node.id) is not None:
            classes = self.params[-1][node.id]
            return ("typed", frozenset(classes & SECTIONS))
        return ALIAS


def source_reads() -> _Reads:
    reads = _Reads()
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "config") not in path.parents:
            reads.visit(ast.parse(path.read_text(), filename=str(path)))
    return reads


def is_read(f: FieldPath, receivers: set[tuple]) -> bool:
    for r in receivers:
        if r == ALIAS or (r[0] == "typed" and f.owner in r[1]):
            return True
        if r[0] == "key" and (f.parent is None or r[1] == f.parent):
            return True
    return False


def unread_fields() -> list[str]:
    reads = source_reads()
    return [
        f.path
        for f in field_paths(RunConfig)
        if not is_read(f, reads.attrs.get(f.name, set())) and f.name not in reads.strings
    ]


def test_the_walk_covers_nested_and_list_sections():
    paths = {f.path for f in field_paths(RunConfig)}
    assert {"seed", "data.domains", "data.domains[].name", "data.domains[].columns.user"} <= paths
    assert {"model.user_tower.heads", "peft.adalora.init_r", "stages.adapt.mode"} <= paths


def test_the_scan_tells_sections_from_look_alikes():
    reads = _Reads()
    reads.visit(
        ast.parse(
            "def f(cfg: ModelConfig, spec: StreamSpec, d):\n"
            "    cfg.dim, spec.shuffle_shards, d.k_core, run.cfg.train.lr, x.spec.batch_size\n"
        )
    )
    fields = {f.path: f for f in field_paths(RunConfig)}

    def read(path: str) -> bool:
        return is_read(fields[path], reads.attrs.get(fields[path].name, set()))

    assert read("model.dim") and read("data.domains[].k_core") and read("train.lr")
    assert not read("data.shuffle_shards") and not read("train.batch_size")
    assert not read("eval.batch_size") and not read("model.mode")


def test_every_config_field_is_read():
    unread = unread_fields()
    pending = sorted(set(unread) & NEW_FIELDS)
    never = sorted(set(unread) - NEW_FIELDS)
    if unread:
        pytest.fail(
            "config fields no code outside distrec/config/ reads (wire them up or remove them):\n"
            + "".join(f"  - {p}\n" for p in never)
            + "".join(f"  - {p} (new: its reader is being written)\n" for p in pending),
            pytrace=False,
        )
