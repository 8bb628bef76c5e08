"""Load a run config from YAML plus dotted `key=value` overrides, with readable errors."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distrec.config.errors import ConfigError
from distrec.config.schema import DATA_ONLY, RunConfig

DATA_SECTIONS = ("data",)  # what `distrec data prepare` reads of a run config


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `3e-4` as a float (YAML 1.1 needs a dot) and only true/false as
    booleans (YAML 1.2): `on: item` is the key "on", not True, and `no` is a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$"),
    list("-+0123456789."),
)
for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    _resolvers[:] = [(tag, rx) for tag, rx in _resolvers if tag != "tag:yaml.org,2002:bool"]
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from `path`; raises ConfigError for a missing file or a non-mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def parse_value(text: str) -> Any:
    """Type a command-line value the way YAML would (numbers, bools, lists, null)."""
    return yaml.load(text, Loader=_Loader) if text != "" else ""


def apply_override(tree: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in a nested dict/list tree; list items are addressed by index."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. train.lr=3e-4")
    key, _, raw = override.partition("=")
    parts = key.strip().split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]))
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = parse_value(raw)
    else:
        node[last] = parse_value(raw)


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {key!r}: {key.rsplit('.', 1)[0]!r} is not a section")
    return node.setdefault(part, {})


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {key!r}: {part!r} is not an index of a {len(node)}-item list")
    return int(part)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate; raises ConfigError with one line per problem."""
    tree = _read_tree(path, overrides)
    return config_from_dict(tree, source=str(path) if path else "<overrides>")


def load_data_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """`load_config` for `distrec data prepare`, which reads only the sections in
    `DATA_SECTIONS`: those are validated (with their own checks), the other sections are
    left at their defaults unread and the checks across sections are skipped, so a config
    whose stages need domains it lacks still prepares its data (`train` and
    `config validate` refuse it). Unknown top-level keys are still errors."""
    tree = _read_tree(path, overrides)
    source = str(path) if path else "<overrides>"
    unknown = [key for key in tree if key not in RunConfig.model_fields]
    if unknown:
        raise _invalid(
            source, [_describe({"loc": (k,), "type": "extra_forbidden"}) for k in unknown]
        )
    sections = {key: value for key, value in tree.items() if key in DATA_SECTIONS}
    return config_from_dict(sections, source, data_only=True)


def _read_tree(path: str | Path | None, overrides: list[str] | None) -> dict[str, Any]:
    tree = read_yaml(path) if path is not None else {}
    for override in overrides or []:
        apply_override(tree, override)
    return tree


def config_from_dict(
    tree: dict[str, Any], source: str = "<dict>", *, data_only: bool = False
) -> RunConfig:
    """Validate a run-config tree; raises ConfigError naming `source`, one line per problem.
    `data_only` skips the checks across sections (see `load_data_config`)."""
    try:
        return RunConfig.model_validate(tree, context={DATA_ONLY: data_only})
    except ValidationError as err:
        raise _invalid(source, [_describe(e) for e in err.errors()]) from None


def _invalid(source: str, problems: list[str]) -> ConfigError:
    return ConfigError(f"{source}: invalid config\n" + "\n".join(f"  - {ln}" for ln in problems))


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        hint = _suggest(error["loc"])
        return f"{loc}: unknown key{hint}; remove it or fix the spelling"
    if error["type"] == "value_error":
        msg = str(error["msg"]).removeprefix("Value error, ")
        # A section's own checks already name their keys (`data.target=...`).
        return msg if not loc or msg.startswith(loc) else f"{loc}: {msg}"
    return f"{loc}={error.get('input')!r}: {error['msg']}"


def _suggest(loc: tuple) -> str:
    """'did you mean' from the fields of the section that holds the unknown key."""
    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        model = _model_of(field.annotation) if field else None
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {'.'.join(map(str, (*loc[:-1], close[0])))!r}?)" if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found:
            return found
    return None


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML, every key in schema order (`config.yaml`, `distrec config`)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
