"""Named extension points: one `Registry` per kind of thing contributors add.

A registry maps a config name (`model.heads: {retrieval: 1.0}`, `data.domains[].format: csv`,
`model.architecture: two_tower`, `stages.extra: [my_stage]`) to the object that
implements it. Built-ins register themselves where they are defined; a new one is
one new file plus one `@REGISTRY.register("name")` line (README "Extending distrec").
Unknown names are a ConfigError that lists what is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from distrec.config.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> implementation for one kind of extension (`kind` names it in errors)."""

    def __init__(self, kind: str, config_key: str) -> None:
        self.kind, self.config_key = kind, config_key
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@MODELS.register("name")` above the implementation."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        """Register `entry` under `name`; a name is registered once (no silent replacement)."""
        if name in self._entries and self._entries[name] is not entry:
            raise ConfigError(
                f"{self.kind} {name!r} is registered twice ({self._entries[name]} and {entry}); "
                f"a plugin imported under two names? give each registration its own name"
            )
        self._entries[name] = entry

    def get(self, name: str, key: str | None = None) -> T:
        """The implementation registered as `name`; ConfigError naming the config key (`key`,
        default the registry's) and the known names if none."""
        if name not in self._entries:
            raise ConfigError(
                f"{key or self.config_key}={name!r}: no {self.kind} of that name; registered: "
                f"{sorted(self._entries)} (README 'Extending distrec' shows how to add one)"
            )
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)
