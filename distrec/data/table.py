"""The unit every dataset format reads a file into (`Table`), and how bad rows are reported.

Rows keep their source position so that a bad row is reported as `file:line column`.
With policy `skip` bad rows are dropped and counted (the counts go into the manifest);
with `fail` the first one raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from distrec.config.errors import ConfigError

Policy = Literal["fail", "skip"]


class DataError(ConfigError):
    """A data file that cannot be imported as it is; the message names file, line and column."""


@dataclass
class BadRows:
    """Bad rows met under policy `skip`, counted by reason, with a few examples."""

    policy: Policy
    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def report(self, where: str, reason: str, fix: str) -> None:
        """Raise (policy `fail`) or count (policy `skip`) the bad row at `where` (`file:line column`)."""
        message = f"{where}: {reason}"
        if self.policy == "fail":
            raise DataError(f"{message}; {fix} (or set on_bad_rows: skip to drop such rows)")
        key = reason.split(":")[0]
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.examples) < 10:
            self.examples.append(message)

    @property
    def total(self) -> int:
        """Bad rows skipped so far, all reasons together."""
        return sum(self.counts.values())


@dataclass
class Table:
    """One file as read by a dataset format: column names, rows of strings, source positions.

    `rows[i]` has one string per `header` column; `lines[i]` is its 1-based source line
    (or row number, for formats without lines), used in every error about that row.
    """

    path: Path | str  # a URI for a file read through a pyarrow filesystem
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str, role: str) -> int:
        """Index of column `name`; a DataError listing the file's columns if it has none."""
        if name not in self.header:
            raise DataError(
                f"{self.path}: missing column {name!r} ({role}); the file has {self.header}. "
                f"Map the right column in the domain's `columns`/`item_id_column`/`text_fields`"
            )
        return self.header.index(name)
