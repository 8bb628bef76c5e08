"""Read interaction logs and item tables (RecBole atomic files, CSV, Parquet).

Every reader returns rows tagged with their source line so that a bad row is
reported as `file:line column`. With policy `skip` bad rows are dropped and
counted (the counts go into the manifest); with `fail` the first one raises.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

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
        message = f"{where}: {reason}"
        if self.policy == "fail":
            raise DataError(f"{message}; {fix} (or set on_bad_rows: skip to drop such rows)")
        key = reason.split(":")[0]
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.examples) < 10:
            self.examples.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Table:
    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str, role: str) -> int:
        if name not in self.header:
            raise DataError(
                f"{self.path}: missing column {name!r} ({role}); the file has {self.header}. "
                f"Map the right column in the domain's `columns`/`item_id_column`/`text_fields`"
            )
        return self.header.index(name)


def read_table(path: str | Path, fmt: str, bad: BadRows) -> Table:
    path = Path(path)
    if fmt == "parquet":
        return _read_parquet(path)
    lines = _decode_lines(path, bad)
    if not lines:
        raise DataError(f"{path}: file is empty; expected a header line")
    if fmt == "recbole":
        return _split_rows(path, lines, bad, lambda text: text.split("\t"), recbole=True)
    if fmt == "csv":
        return _split_rows(path, lines, bad, lambda text: next(csv.reader(io.StringIO(text))))
    raise DataError(f"{path}: unknown format {fmt!r}; use recbole, csv or parquet")


def _decode_lines(path: Path, bad: BadRows) -> list[tuple[int, str]]:
    """(line number, text) per non-empty line; non-UTF-8 lines are bad rows."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        return [(i + 1, ln.rstrip("\r")) for i, ln in enumerate(text.split("\n")) if ln.strip()]
    except UnicodeDecodeError:
        pass
    out = []
    for i, chunk in enumerate(raw.split(b"\n")):
        try:
            ln = chunk.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            column = chunk[: err.start].count(b"\t") + chunk[: err.start].count(b",") + 1
            bad.report(
                f"{path}:{i + 1} column {column}",
                f"non-UTF-8 text: byte {chunk[err.start]:#x} at offset {err.start}",
                "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
            )
            continue
        if ln.strip():
            out.append((i + 1, ln))
    return out


def _split_rows(path, lines, bad, split, recbole: bool = False) -> Table:
    _first_line, head = lines[0]
    header = [h.strip() for h in split(head)]
    if recbole:
        # RecBole atomic headers are `name:type`; the type is informational here.
        header = [h.split(":", 1)[0] for h in header]
    rows, numbers = [], []
    width = len(header)
    for number, text in lines[1:]:
        fields = split(text)
        if len(fields) != width:
            bad.report(
                f"{path}:{number} column {min(len(fields), width) + 1}",
                f"malformed row: expected {width} fields {header}, got {len(fields)}",
                "fix the row's separators/quoting",
            )
            continue
        rows.append(fields)
        numbers.append(number)
    return Table(path, header, rows, numbers)


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet file: {err}") from err
    columns = table.column_names
    data = table.to_pydict()
    n = table.num_rows
    rows = [["" if data[c][i] is None else str(data[c][i]) for c in columns] for i in range(n)]
    # Parquet has no lines: "line" is the 1-based row number, header excluded.
    return Table(path, columns, rows, list(range(1, n + 1)))


@dataclass
class Interactions:
    users: np.ndarray  # str
    items: np.ndarray  # str
    timestamps: np.ndarray  # float64
    ratings: np.ndarray | None  # float32
    lines: np.ndarray  # int64, source position for stable ordering


def parse_interactions(
    table: Table, user: str, item: str, timestamp: str, rating: str | None, bad: BadRows
) -> Interactions:
    cu = table.column(user, "user")
    ci = table.column(item, "item")
    ct = table.column(timestamp, "timestamp")
    cr = table.column(rating, "rating") if rating and rating in table.header else None
    users, items, stamps, rates, lines = [], [], [], [], []
    for row, number in zip(table.rows, table.lines, strict=True):
        where = f"{table.path}:{number}"
        if not row[cu].strip() or not row[ci].strip():
            empty = table.header[cu] if not row[cu].strip() else table.header[ci]
            bad.report(
                f"{where} column {empty!r}", "empty id", "every row needs a user and an item"
            )
            continue
        try:
            ts = float(row[ct])
        except ValueError:
            bad.report(
                f"{where} column {timestamp!r}",
                f"timestamp {row[ct]!r} is not a number",
                "timestamps must be numeric (e.g. unix seconds)",
            )
            continue
        if cr is not None:
            try:
                rates.append(float(row[cr]))
            except ValueError:
                bad.report(
                    f"{where} column {rating!r}",
                    f"rating {row[cr]!r} is not a number",
                    "ratings must be numeric",
                )
                continue
        users.append(row[cu])
        items.append(row[ci])
        stamps.append(ts)
        lines.append(number)
    return Interactions(
        users=np.array(users, dtype=object),
        items=np.array(items, dtype=object),
        timestamps=np.array(stamps, dtype=np.float64),
        ratings=np.array(rates, dtype=np.float32) if cr is not None else None,
        lines=np.array(lines, dtype=np.int64),
    )


@dataclass
class ItemTable:
    fields: list[str]
    rows: dict[str, tuple[str, ...]]
    duplicate_rows_merged: int = 0
    conflicting_duplicates: int = 0


def parse_items(table: Table, id_column: str, text_fields: list[str], bad: BadRows) -> ItemTable:
    cid = table.column(id_column, "item id")
    cols = [table.column(f, "text field") for f in text_fields]
    out = ItemTable(fields=list(text_fields), rows={})
    first_line: dict[str, int] = {}
    for row, number in zip(table.rows, table.lines, strict=True):
        item_id = row[cid]
        if not item_id.strip():
            bad.report(
                f"{table.path}:{number} column {id_column!r}",
                "empty item id",
                "every item row needs an id",
            )
            continue
        values = tuple(row[c].strip() for c in cols)
        if item_id in out.rows:
            if out.rows[item_id] == values:
                out.duplicate_rows_merged += 1
                continue
            out.conflicting_duplicates += 1
            bad.report(
                f"{table.path}:{number} column {id_column!r}",
                f"duplicate item id {item_id!r} with different fields than line {first_line[item_id]}",
                "make item ids unique",
            )
            continue
        out.rows[item_id] = values
        first_line[item_id] = number
    return out
