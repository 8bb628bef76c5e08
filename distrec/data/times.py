"""Timestamps as float64 unix seconds, from numbers or ISO-8601 times.

A timestamp column holds one kind of value: numbers (unix seconds, read as Python's
`float()` reads them) or ISO-8601 times (`2024-03-01T12:00:00Z`, `2024-03-01
12:00:00.25+02:00`, `2024-03-01`; Parquet timestamp and date columns are times too).
Time-zone rule: a time with an offset or zone is that instant (converted to UTC); a time
without one (and a date) is read as UTC. The column's kind is that of its first readable
value in file order; a value of the other kind, or one of neither, is a bad row. Sub-second
digits are kept (to float64's precision: about 0.2 us for present-day stamps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TimeKind = Literal["number", "ISO-8601 time"]
NUMBER: TimeKind = "number"
ISO_TIME: TimeKind = "ISO-8601 time"
TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_A = {NUMBER: "a number", ISO_TIME: "an ISO-8601 time"}
ACCEPTED = (
    "timestamps must be numbers (unix seconds) or ISO-8601 times (e.g. 2024-03-01T12:00:00Z, "
    "2024-03-01 12:00:00+02:00, 2024-03-01; no offset = UTC), one kind per column"
)


@dataclass
class ParsedTimes:
    """A timestamp column typed: seconds (NaN where bad), the bad mask, and the column's
    kind with the position of the value that set it (None: no value was readable)."""

    seconds: np.ndarray  # float64
    bad: np.ndarray  # bool
    readable: np.ndarray  # bool: a number or an ISO-8601 time, of the column's kind or not
    kind: TimeKind | None
    first: int | None  # position of the first readable value, which sets `kind`

    def why_bad(self, pos: int, value: str, kind_line: int | None) -> str:
        """The bad-row reason for the bad value `value` at `pos`; `kind_line` is the line
        of the value that set the column's kind."""
        if not self.readable[pos] or self.kind is None:
            return f"unreadable timestamp: {value!r} is neither a number nor an ISO-8601 time"
        other = ISO_TIME if self.kind == NUMBER else NUMBER
        return (
            f"mixed timestamp kinds: {value!r} is {_A[other]}, but the column holds "
            f"{self.kind}s (from its first timestamp, line {kind_line})"
        )


def parse_times(values: Sequence[str] | np.ndarray, kind: TimeKind | None = None) -> ParsedTimes:
    """Type a column of timestamp texts under the module's rules; `kind` forces the
    column's kind (a chunk of a file whose kind its start set), else its first value sets it."""
    try:
        # Every value a number (the usual log): numpy's float() per value, no second pass.
        numbers = np.asarray(values, dtype=object).astype(np.float64)
        is_number = np.ones(len(numbers), dtype=bool)
        text = None
    except ValueError:
        text = pc.utf8_trim_whitespace(pa.array(values, pa.string()))
        numbers, is_number = _numbers(values, text)
    times = np.full(len(is_number), np.nan)
    is_time = np.zeros(len(is_number), dtype=bool)
    if text is not None:
        rest = np.flatnonzero(~is_number)  # a number is a number even if it reads as ISO (2024)
        times[rest], is_time[rest] = iso_seconds(text.take(pa.array(rest)))
    readable = is_number | is_time
    first = int(np.argmax(readable)) if readable.any() else None
    if kind is None and first is not None:
        kind = NUMBER if is_number[first] else ISO_TIME
    good = {NUMBER: is_number, ISO_TIME: is_time, None: np.zeros_like(readable)}[kind]
    seconds = np.where(good, numbers if kind == NUMBER else times, np.nan)
    return ParsedTimes(seconds, ~good, readable, kind, first)


def _numbers(values: Sequence[str] | np.ndarray, text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float() of every value that may be a number, and which were; `text` is the values
    trimmed. A digit before `-` or `:` (2024-03-01, 12:00) is never in a float, so an ISO
    column skips float()'s exception per value."""
    numbers = np.full(len(text), np.nan)
    is_number = np.zeros(len(text), dtype=bool)
    not_numbers = pc.match_substring_regex(text, r"\d[-:]").to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(~not_numbers):
        with contextlib.suppress(ValueError):
            numbers[i], is_number[i] = float(values[i]), True
    return numbers, is_number


def iso_seconds(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds of ISO-8601 texts (offsets applied, none = UTC) and a parsed mask."""
    if len(texts) == 0:
        return np.empty(0), np.empty(0, dtype=bool)
    # utc=True converts offset times to UTC and localizes naive ones as UTC (the rule).
    stamps = pd.to_datetime(
        pd.Series(texts.to_numpy(zero_copy_only=False), dtype=object),
        format="ISO8601",
        utc=True,
        errors="coerce",
    )
    parsed = stamps.notna().to_numpy()
    ticks = stamps.dt.tz_localize(None).to_numpy()
    unit, _ = np.datetime_data(ticks.dtype)
    return ticks_to_seconds(ticks.view(np.int64), unit), parsed


def ticks_to_seconds(ticks: np.ndarray, unit: str) -> np.ndarray:
    """int64 ticks of `unit` (s/ms/us/ns) since the epoch as float64 seconds, the whole
    seconds and the fraction converted apart (float64 cannot hold ns ticks exactly)."""
    per = TICKS_PER_SECOND[unit]
    whole, fraction = np.divmod(np.asarray(ticks, dtype=np.int64), per)
    return whole.astype(np.float64) + fraction / per
