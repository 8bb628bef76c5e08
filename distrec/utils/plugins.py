"""Load extension files before a command runs: `DISTREC_PLUGINS=my_format.py,my_pkg.heads`.

A plugin registers itself on import (`@FORMATS.register("jsonl")` at module level), so
loading it is all the wiring there is. Entries are module names (importable from
sys.path) or paths to `.py` files, comma-separated. The variable is inherited by the
processes `accelerate launch` starts, so every rank loads the same plugins.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from distrec.config.errors import ConfigError

ENV_VAR = "DISTREC_PLUGINS"


def load_plugins(spec: str | None = None) -> list[str]:
    """Import every plugin in `spec` (default: $DISTREC_PLUGINS); returns their module names."""
    spec = os.environ.get(ENV_VAR, "") if spec is None else spec
    return [_load(entry.strip()) for entry in spec.split(",") if entry.strip()]


def absolute_plugins() -> str:
    """Rewrite $DISTREC_PLUGINS with every `.py` path made absolute (for processes that run
    in another folder, such as Ray Tune trials); returns the new value."""
    entries = [e.strip() for e in os.environ.get(ENV_VAR, "").split(",") if e.strip()]
    value = ",".join(str(Path(e).resolve()) if e.endswith(".py") else e for e in entries)
    if entries:
        os.environ[ENV_VAR] = value
    return value


def _load(entry: str) -> str:
    if entry.endswith(".py"):
        path = Path(entry).resolve()
        if not path.exists():
            raise ConfigError(f"{ENV_VAR}: plugin file {entry!r} does not exist ({path})")
        name = f"distrec_plugin_{path.stem}"
        if name not in sys.modules:
            module_spec = importlib.util.spec_from_file_location(name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        return name
    try:
        importlib.import_module(entry)
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"{ENV_VAR}: cannot import plugin {entry!r} ({err}); give an importable module "
            f"name or a path ending in .py"
        ) from err
    return entry
