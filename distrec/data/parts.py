"""An interaction log as parts, typed in parallel (the Ray engine's reading half).

A log is one file or a folder of part files, local or at any URI a pyarrow filesystem reads
(`s3://`, `gs://`, `hdfs://`, ...). Each `Chunk` (a part, or a few row groups of a Parquet
part) becomes an Arrow table of typed rows (`user`, `item`, `ts`, `rating`, `part`, `line`)
under the local importers' rules: the same checks in the same order, reported as
`file:line column` naming the part file. Bad rows are recorded, not raised, so the driver
can replay them in file order (`replay`) with the domain's `on_bad_rows` policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from distrec.data.formats import FORMATS
from distrec.data.importers import (
    BadRows,
    DataError,
    Table,
    parse_interactions,
    report_bad_number,
    report_bad_time,
    report_empty_id,
    report_unknown_item,
    split_line_table,
)
from distrec.data.times import (
    ISO_TIME,
    NUMBER,
    ParsedTimes,
    TimeKind,
    parse_times,
    ticks_to_seconds,
)
from distrec.utils.hashing import sha256_json

ROWS_PER_CHUNK = 1_000_000  # Parquet row groups are read in tasks of about this many rows


@dataclass(frozen=True)
class LogColumns:
    """The interaction log's column names (the domain's `columns`)."""

    user: str
    item: str
    timestamp: str
    rating: str | None


@dataclass(frozen=True)
class Chunk:
    """What one read task types: a part file (label = its name in reports) or some of its
    Parquet row groups, the first of which starts at 1-based row `first_line`."""

    label: str
    part: int
    fmt: str
    row_groups: tuple[int, ...] | None = None
    first_line: int = 1


class RecordedBadRows(BadRows):
    """Skip-policy `BadRows` that also keeps its first reports, for `replay` in the driver."""

    def __init__(self) -> None:
        super().__init__("skip")
        self.reports: list[tuple[str, str, str]] = []

    def report(self, where: str, reason: str, fix: str) -> None:
        """Count the bad row, keeping the first ten reports for the driver to replay."""
        if len(self.reports) < 10:
            self.reports.append((where, reason, fix))
        super().report(where, reason, fix)


@dataclass
class ChunkReport:
    """A read task's bad rows by stage (splitting, typing, unknown items) and its schema."""

    stages: list[RecordedBadRows] = field(
        default_factory=lambda: [RecordedBadRows() for _ in range(3)]
    )
    has_ratings: bool = False


def replay(bad: BadRows, reports: list[ChunkReport]) -> None:
    """Report the chunks' bad rows into `bad` as one importer reading the log in order would
    (the first raises under `fail`): per stage, chunks in part/row order; counts summed."""
    counts: dict[str, int] = dict(bad.counts)
    for stage in range(3):
        for report in reports:
            for where, reason, fix in report.stages[stage].reports:
                bad.report(where, reason, fix)
    for report in reports:
        for stage in report.stages:
            for key, n in stage.counts.items():
                counts[key] = counts.get(key, 0) + n
    bad.counts = counts


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).absolute())


def list_parts(uri: str) -> list[str]:
    """The log's part files: `uri` itself, or the files under the folder `uri` by name
    (hidden and `_`-prefixed files such as `_SUCCESS` left out)."""
    fs, path = _filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [uri]
    if info.type != pafs.FileType.Directory:
        raise DataError(f"{uri}: no such file or folder (the domain's `interactions`)")
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    names = sorted(
        f.path[len(path) :].lstrip("/")
        for f in found
        if f.type == pafs.FileType.File and not f.base_name.startswith((".", "_"))
    )
    if not names:
        raise DataError(f"{uri}: folder holds no part files")
    return [f"{uri.rstrip('/')}/{name}" for name in names]


def sha256_uri(uri: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (as `sha256_file`, for any pyarrow filesystem)."""
    fs, path = _filesystem(uri)
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def log_digest(uri: str, parts: list[str], hashes: list[str]) -> str:
    """The log's content hash: a single file's sha256, or one over a folder's (name, sha256)."""
    if parts == [uri]:
        return hashes[0]
    prefix = len(uri.rstrip("/")) + 1
    return sha256_json([[p[prefix:], h] for p, h in zip(parts, hashes, strict=True)])


def plan_chunks(parts: list[str], fmt: str, tasks: int) -> list[Chunk]:
    """Read tasks for `parts`: one per part; Parquet parts split by row groups into about
    `tasks` chunks overall (at most `ROWS_PER_CHUNK` rows each, at least one row group)."""
    if fmt != "parquet":
        return [Chunk(part, number, fmt) for number, part in enumerate(parts)]
    metas = []
    for part in parts:
        fs, path = _filesystem(part)
        try:
            metas.append(pq.read_metadata(path, filesystem=fs))
        except Exception as err:
            raise DataError(f"{part}: not a readable Parquet file: {err}") from err
    total = sum(meta.num_rows for meta in metas)
    target = max(1, min(ROWS_PER_CHUNK, -(-total // max(tasks, 1))))
    chunks: list[Chunk] = []
    for number, (part, meta) in enumerate(zip(parts, metas, strict=True)):
        group, rows, first = [], 0, 1
        for g in range(meta.num_row_groups):
            group.append(g)
            rows += meta.row_group(g).num_rows
            if rows >= target or g == meta.num_row_groups - 1:
                chunks.append(Chunk(part, number, fmt, tuple(group), first))
                group, first, rows = [], first + rows, 0
    return chunks


def read_chunk(
    chunk: Chunk, columns: LogColumns, known_items: pa.Array
) -> tuple[pa.Table, ChunkReport]:
    """Type one chunk's rows, dropping bad rows and rows of items not in `known_items`."""
    report = ChunkReport()
    if chunk.fmt == "parquet":
        typed = _type_parquet(chunk, columns, report)
    else:
        typed = _type_rows(chunk, columns, report)
    known = pc.is_in(typed["item"], value_set=known_items).to_numpy(zero_copy_only=False)
    lines = typed["line"].to_numpy()
    for pos in np.flatnonzero(~known):
        report_unknown_item(
            report.stages[2], f"{chunk.label}:{lines[pos]}", typed["item"][pos].as_py()
        )
    return typed.filter(pa.array(known)), report


def _typed_table(
    users: pa.Array,
    items: pa.Array,
    stamps: np.ndarray,
    ratings: np.ndarray | None,
    lines: np.ndarray,
    part: int,
) -> pa.Table:
    columns = {"user": users, "item": items, "ts": pa.array(stamps, pa.float64())}
    if ratings is not None:
        columns["rating"] = pa.array(np.asarray(ratings, dtype=np.float32), pa.float32())
    columns["part"] = pa.array(np.full(len(lines), part, dtype=np.int32))
    columns["line"] = pa.array(np.asarray(lines, dtype=np.int64))
    return pa.table(columns)


def _type_rows(chunk: Chunk, columns: LogColumns, report: ChunkReport) -> pa.Table:
    """A line format (or a plugin's reader) through the local importer, row by row."""
    split_bad, type_bad = report.stages[0], report.stages[1]
    if chunk.fmt in ("csv", "recbole"):
        fs, path = _filesystem(chunk.label)
        with fs.open_input_stream(path) as stream:
            raw = stream.read()
        table = split_line_table(chunk.label, raw, split_bad, recbole=chunk.fmt == "recbole")
    else:
        table = FORMATS.get(chunk.fmt)(Path(chunk.label), split_bad)
    inter = parse_interactions(
        table, columns.user, columns.item, columns.timestamp, columns.rating, type_bad
    )
    report.has_ratings = inter.ratings is not None
    users = pa.array(inter.users.tolist(), pa.string())
    items = pa.array(inter.items.tolist(), pa.string())
    return _typed_table(users, items, inter.timestamps, inter.ratings, inter.lines, chunk.part)


def _type_parquet(chunk: Chunk, columns: LogColumns, report: ChunkReport) -> pa.Table:
    """Parquet rows typed column-wise, with `parse_interactions`' checks and messages."""
    fs, path = _filesystem(chunk.label)
    try:
        data = pq.ParquetFile(path, filesystem=fs).read_row_groups(list(chunk.row_groups or ()))
    except Exception as err:
        raise DataError(f"{chunk.label}: not a readable Parquet file: {err}") from err
    header = Table(chunk.label, data.column_names, [], [])
    user = data.column(header.column(columns.user, "user"))
    item = data.column(header.column(columns.item, "item"))
    stamp = data.column(header.column(columns.timestamp, "timestamp"))
    has_rating = bool(columns.rating) and columns.rating in data.column_names
    rating = data.column(header.column(columns.rating, "rating")) if has_rating else None
    report.has_ratings = has_rating
    users, items = _as_text(user), _as_text(item)
    empty_user = _is_blank(users)
    empty_item = _is_blank(items)
    times, kind_line = _as_times(stamp, chunk, columns.timestamp)
    ratings, bad_rating = _as_number(rating) if rating is not None else (None, None)
    bad = empty_user | empty_item | times.bad
    if bad_rating is not None:
        bad |= bad_rating
    lines = np.arange(chunk.first_line, chunk.first_line + data.num_rows, dtype=np.int64)
    type_bad = report.stages[1]
    for pos in np.flatnonzero(bad):
        where = f"{chunk.label}:{lines[pos]}"
        if empty_user[pos] or empty_item[pos]:
            report_empty_id(type_bad, where, columns.user if empty_user[pos] else columns.item)
        elif times.bad[pos]:
            reason = times.why_bad(pos, _text(stamp, pos), kind_line)
            report_bad_time(type_bad, where, columns.timestamp, reason)
        else:
            assert rating is not None and columns.rating is not None
            report_bad_number(type_bad, where, "rating", columns.rating, _text(rating, pos))
    keep = ~bad
    mask = pa.array(keep)
    return _typed_table(
        users.filter(mask),
        items.filter(mask),
        times.seconds[keep],
        None if ratings is None else ratings[keep],
        lines[keep],
        chunk.part,
    )


def _as_times(column: pa.ChunkedArray, chunk: Chunk, name: str) -> tuple[ParsedTimes, int | None]:
    """The timestamp column typed as `parse_interactions` types `read_parquet`'s text of it,
    with the line of the value that set its kind: numbers, timestamps and dates by type
    (their ticks are exact; a zone-less timestamp is UTC), text by `parse_times`."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        days = pa.types.is_date32(kind)  # date32 counts days, date64 milliseconds
        raw = column.cast(pa.int32() if days else pa.int64()).cast(pa.int64())
        ticks = pc.fill_null(raw, 0).to_numpy() * (86400 if days else 1)
        unit = "s" if days else "ms" if pa.types.is_date64(kind) else kind.unit
        bad = column.is_null().to_numpy(zero_copy_only=False)
        seconds = np.where(bad, np.nan, ticks_to_seconds(ticks, unit))
        return ParsedTimes(seconds, bad, ~bad, ISO_TIME, None), None
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        seconds, bad = _as_number(column)
        return ParsedTimes(seconds, bad, ~bad, NUMBER, None), None
    text = _as_text(column).to_numpy(zero_copy_only=False)
    forced, kind_line = _part_time_kind(chunk, name) if chunk.first_line > 1 else (None, None)
    times = parse_times(text, forced)
    if forced is None and times.first is not None:
        kind_line = chunk.first_line + times.first
    return times, kind_line


def _part_time_kind(chunk: Chunk, name: str) -> tuple[TimeKind | None, int | None]:
    """The kind of a text timestamp column and the line that set it, from the part's first
    readable value: a chunk after the first types the column as the whole part is typed."""
    fs, path = _filesystem(chunk.label)
    parquet = pq.ParquetFile(path, filesystem=fs)
    line = 1
    for group in range(parquet.num_row_groups):
        text = _as_text(parquet.read_row_group(group, columns=[name]).column(0))
        for start in range(0, len(text), 1024):
            times = parse_times(text[start : start + 1024].to_numpy(zero_copy_only=False))
            if times.first is not None:
                return times.kind, line + start + times.first
        line += len(text)
    return None, None


def _text(column: pa.ChunkedArray, pos: int) -> str:
    # What `read_parquet` turns a value into: its str, nulls as "".
    value = column[int(pos)].as_py()
    return "" if value is None else str(value)


def _as_text(column: pa.ChunkedArray) -> pa.Array:
    """Values as `read_parquet` sees them (str of the value, null = ""), as Arrow strings."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
        column = column.cast(kind)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        return pc.fill_null(column.cast(pa.string()), "").combine_chunks()
    # Other types render differently in Arrow and Python (floats, dates): Python decides.
    return pa.array(["" if v is None else str(v) for v in column.to_pylist()], pa.string())


def _is_blank(text: pa.Array) -> np.ndarray:
    return pc.equal(pc.utf8_trim_whitespace(text), "").to_numpy(zero_copy_only=False)


def _as_number(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a bad mask, as `float(str(value))` would take them."""
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        # unsafe: int64 beyond 2**53 (nanosecond stamps) rounds to nearest, as float() does
        values = pc.fill_null(column.cast(pa.float64(), safe=False), np.nan).to_numpy()
        return values, column.is_null().to_numpy(zero_copy_only=False)
    text = _as_text(column)
    try:
        # Arrow parses a subset of what float() accepts (no spaces, no `1_000`): Python
        # decides only where Arrow refuses.
        parsed = text.cast(pa.float64())
        return parsed.to_numpy(zero_copy_only=False), np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        pass
    values = np.empty(len(text), dtype=np.float64)
    bad = np.zeros(len(text), dtype=bool)
    for i, value in enumerate(text.to_pylist()):
        try:
            values[i] = float(value)
        except ValueError:
            values[i], bad[i] = np.nan, True
    return values, bad
