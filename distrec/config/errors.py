"""The one error type for input a run cannot use (config, data, checkpoint, CLI).

Its own module so that every layer can raise it without importing the schema
(and the schema's checks can raise it without importing themselves back).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A run configuration that cannot run; the message says why and how to fix it."""
