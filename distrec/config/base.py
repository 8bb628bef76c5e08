"""The base of every config section: unknown keys and silent coercion are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: forbids unknown keys, coerces nothing, validates assignments."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)
