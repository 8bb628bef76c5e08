"""The built-in dataset formats (RecBole atomic files, CSV, Parquet) and row parsing.

Each format is a `TableReader` (distrec/data/formats.py) registered under its
`data.domains[].format` name; `parse_interactions` / `parse_items` then type a `Table`'s
rows, reporting bad ones as `file:line column` through `BadRows`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distrec.data.formats import FORMATS
from distrec.data.table import BadRows, DataError, Policy, Table
from distrec.data.times import ACCEPTED, parse_times

__all__ = [
    "BadRows",
    "DataError",
    "Interactions",
    "ItemTable",
    "Policy",
    "Table",
    "decode_bytes",
    "decode_lines",
    "parse_interactions",
    "parse_items",
    "read_table",
    "report_bad_number",
    "report_bad_time",
    "report_empty_id",
    "report_unknown_item",
    "split_line_table",
]


def read_table(path: str | Path, fmt: str, bad: BadRows) -> Table:
    """Read `path` with the dataset format registered as `fmt` (ConfigError if none is)."""
    return FORMATS.get(fmt)(Path(path), bad)


@FORMATS.register("recbole")
def read_recbole(path: Path, bad: BadRows) -> Table:
    """A RecBole atomic file: tab-separated, `name:type` header (the type is dropped)."""
    return split_line_table(path, path.read_bytes(), bad, recbole=True)


@FORMATS.register("csv")
def read_csv(path: Path, bad: BadRows) -> Table:
    """A CSV file with a header line; quoted fields may hold commas."""
    return split_line_table(path, path.read_bytes(), bad)


def split_line_table(path: Path | str, raw: bytes, bad: BadRows, *, recbole: bool = False) -> Table:
    """A line format's `Table` from the file's bytes (CSV, or RecBole's tab-separated atomic
    file); `path` (a local path or a URI) names the file in every bad-row report."""
    lines = decode_bytes(path, raw, bad)
    if not lines:
        raise DataError(f"{path}: file is empty; expected a header line")
    split = _split_tab if recbole else _split_csv
    return _split_rows(path, lines, bad, split, recbole)


@FORMATS.register("parquet")
def read_parquet(path: Path, bad: BadRows) -> Table:
    """A Parquet file; every value as its string, nulls as empty strings."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet file: {err}") from err
    columns = table.column_names
    data = table.to_pydict()
    num_rows = table.num_rows
    rows = [
        ["" if data[column][row] is None else str(data[column][row]) for column in columns]
        for row in range(num_rows)
    ]
    # Parquet has no lines: "line" is the 1-based row number, header excluded.
    return Table(path, columns, rows, list(range(1, num_rows + 1)))


def decode_lines(path: Path, bad: BadRows) -> list[tuple[int, str]]:
    """(line number, text) per non-empty line; non-UTF-8 lines are bad rows (for line formats)."""
    return decode_bytes(path, path.read_bytes(), bad)


def decode_bytes(path: Path | str, raw: bytes, bad: BadRows) -> list[tuple[int, str]]:
    """`decode_lines` of bytes already read; `path` names the file in reports."""
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


def _split_tab(text: str) -> list[str]:
    return text.split("\t")


def _split_csv(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)))


def _split_rows(
    path: Path | str,
    lines: list[tuple[int, str]],
    bad: BadRows,
    split: Callable[[str], list[str]],
    recbole: bool = False,
) -> Table:
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


@dataclass
class Interactions:
    """A typed interaction log, one entry per kept row."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    timestamps: np.ndarray  # float64
    ratings: np.ndarray | None  # float32
    lines: np.ndarray  # int64, source position for stable ordering


def parse_interactions(
    table: Table, user: str, item: str, timestamp: str, rating: str | None, bad: BadRows
) -> Interactions:
    """Type a log's rows (ids, timestamp and rating); bad rows go to `bad`.

    Timestamps become float64 unix seconds: a column of numbers (unix seconds) or of
    ISO-8601 times, offsets converted to UTC and times without one read as UTC
    (distrec/data/times.py); a value of the other kind or of neither is a bad row.
    """
    user_col = table.column(user, "user")
    item_col = table.column(item, "item")
    time_col = table.column(timestamp, "timestamp")
    rating_col = table.column(rating, "rating") if rating and rating in table.header else None
    times = parse_times([row[time_col] for row in table.rows])
    first_line = None if times.first is None else table.lines[times.first]
    bad_time = times.bad.tolist()  # Python bools: numpy scalar indexing per row is slow
    users, items, rates, kept = [], [], [], []
    for pos, (row, number) in enumerate(zip(table.rows, table.lines, strict=True)):
        where = f"{table.path}:{number}"
        if not row[user_col].strip() or not row[item_col].strip():
            empty = table.header[user_col] if not row[user_col].strip() else table.header[item_col]
            report_empty_id(bad, where, empty)
            continue
        if bad_time[pos]:
            report_bad_time(bad, where, timestamp, times.why_bad(pos, row[time_col], first_line))
            continue
        if rating_col is not None:
            try:
                rates.append(float(row[rating_col]))
            except ValueError:
                report_bad_number(bad, where, "rating", rating, row[rating_col])
                continue
        users.append(row[user_col])
        items.append(row[item_col])
        kept.append(pos)
    keep = np.array(kept, dtype=np.int64)
    return Interactions(
        users=np.array(users, dtype=object),
        items=np.array(items, dtype=object),
        timestamps=times.seconds[keep],
        ratings=np.array(rates, dtype=np.float32) if rating_col is not None else None,
        lines=np.array(table.lines, dtype=np.int64)[keep],
    )


def report_empty_id(bad: BadRows, where: str, column: str) -> None:
    """Report a log row (`where` = `file:line`) whose user or item id `column` is empty."""
    bad.report(f"{where} column {column!r}", "empty id", "every row needs a user and an item")


def report_bad_number(bad: BadRows, where: str, role: str, column: str, value: str) -> None:
    """Report a log row whose `role` value (a rating) is not a number."""
    bad.report(
        f"{where} column {column!r}",
        f"{role} {value!r} is not a number",
        f"{role}s must be numeric",
    )


def report_bad_time(bad: BadRows, where: str, column: str, reason: str) -> None:
    """Report a log row whose timestamp is bad for `reason` (`ParsedTimes.why_bad`)."""
    bad.report(f"{where} column {column!r}", reason, ACCEPTED)


def report_unknown_item(bad: BadRows, where: str, item: str) -> None:
    """Report a log row (`where` = `file:line`) whose item is not in the item table."""
    bad.report(
        f"{where} column 'item'",
        f"item {item!r} is not in the item table",
        "add the item to the item table",
    )


@dataclass
class ItemTable:
    """An item table: per item id, its text-field values (in `fields` order)."""

    fields: list[str]
    rows: dict[str, tuple[str, ...]]
    duplicate_rows_merged: int = 0
    conflicting_duplicates: int = 0


def parse_items(table: Table, id_column: str, text_fields: list[str], bad: BadRows) -> ItemTable:
    """Item id -> its `text_fields` values; identical duplicate rows merge, conflicting ones are bad."""
    id_col = table.column(id_column, "item id")
    field_cols = [table.column(name, "text field") for name in text_fields]
    out = ItemTable(fields=list(text_fields), rows={})
    first_line: dict[str, int] = {}
    for row, number in zip(table.rows, table.lines, strict=True):
        item_id = row[id_col]
        if not item_id.strip():
            bad.report(
                f"{table.path}:{number} column {id_column!r}",
                "empty item id",
                "every item row needs an id",
            )
            continue
        values = tuple(row[col].strip() for col in field_cols)
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
