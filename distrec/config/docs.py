"""The config reference: every section's keys, types, defaults and descriptions, as Markdown.

`docs/config.md` is this output (a test keeps them equal); regenerate it with
`distrec config docs --out docs/config.md`.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from distrec.config.schema import RunConfig

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def config_reference() -> str:
    """The Markdown reference of `RunConfig`: one table per section, in schema order."""
    parts = [
        "# Run config reference\n",
        "Generated from `distrec/config/` by `distrec config docs --out docs/config.md`; "
        "do not edit by hand. Keys are dotted paths (`train.lr=3e-4` on the command line); "
        "`[]` marks the items of a list.\n",
    ]
    for key, model in sections(RunConfig):
        parts.append(_section_table(key, model))
    return "\n".join(parts)


def sections(model: type[BaseModel], key: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """(dotted key, section model) for `model` and every section nested in it, depth first.

    A list of sections is keyed with `[]`, e.g. `data.domains[]`."""
    yield key, model
    for name, field in model.model_fields.items():
        nested = section_of(field.annotation)
        if nested is not None:
            suffix = "[]" if get_origin(field.annotation) is list else ""
            yield from sections(nested, f"{key}.{name}{suffix}" if key else f"{name}{suffix}")


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section model an annotation holds (itself, a list's items, or an optional
    section's `X | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is list:
        return section_of(get_args(annotation)[0])
    options = [a for a in get_args(annotation) if a is not type(None)]
    if len(options) == 1 and len(get_args(annotation)) == 2:
        return section_of(options[0])
    return None


def _section_table(key: str, model: type[BaseModel]) -> str:
    title = f"`{key}`" if key else "top level"
    doc = " ".join((model.__doc__ or "").split())
    rows = [
        f"## {title}\n",
        *([f"{doc}\n"] if doc else []),
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in model.model_fields.items():
        if section_of(field.annotation) is not None:
            continue
        dotted = f"{key}.{name}" if key else name
        rows.append(
            f"| `{dotted}` | {_cell(type_name(field))} | {_cell(default_text(field))} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(rows) + "\n"


def type_name(field: FieldInfo) -> str:
    """The field's type as a reader writes it in YAML, with its bounds: `int >= 1`."""
    annotation, nullable = field.annotation, False
    if get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
        rest = tuple(a for a in get_args(annotation) if a is not type(None))
        annotation, nullable = (rest[0] if len(rest) == 1 else Union[rest]), True  # noqa: UP007
    text = _type_text(annotation)
    for meta in field.metadata:
        for attr, sign in _BOUNDS:
            if getattr(meta, attr, None) is not None:
                text += f" {sign} {getattr(meta, attr)}"
        if getattr(meta, "pattern", None) is not None:
            text += f" matching `{meta.pattern}`"
    return text + " or null" if nullable else text


def _type_text(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_text(a) for a in get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_text(a) for a in get_args(annotation))
        return f"{origin.__name__}[{args}]"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as YAML-ish JSON (`null`, `true`, `[10, 20]`), or `required`."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    """Table-cell safe: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")
