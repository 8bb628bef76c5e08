"""The dataset extension points: formats (`data.domains[].format`) and embedded datasets.

A dataset format says how a domain's two files (interaction log, item table) are read;
each reader registers itself where it is defined (`@FORMATS.register("csv")` in
distrec/data/importers.py). An embedded dataset is one distrec fetches itself
(`EMBEDDED_DATASETS.add("ml-1m", ...)` in distrec/data/fetch.py). Names are checked
against these registries by `distrec.data.prepare.check_data_names`, which sees every
built-in; plugin files register on import (README "Extending distrec").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from distrec.data.table import BadRows, Table
from distrec.utils.registry import Registry


class TableReader(Protocol):
    """Reads one file of a domain (its interaction log or its item table) into a `Table`.

    Returns the file's column names as `header` and its good rows as lists of strings, one
    per header column, with `lines[i]` the 1-based source position of `rows[i]` (a line
    number; a row number for formats without lines). A row that cannot be split into the
    header's columns goes to `bad.report(f"{path}:{line} column {n}", reason, fix)` (which
    raises under `on_bad_rows: fail`) and is left out; a file that cannot be read at all
    raises `DataError`. Typing values (ids, timestamps, ratings) is done after the reader.
    """

    def __call__(self, path: Path, bad: BadRows) -> Table: ...


FORMATS: Registry[TableReader] = Registry("dataset format", "data.domains[].format")


@dataclass(frozen=True)
class EmbeddedDataset:
    """A dataset distrec fetches itself: how to get it, where its files lie, how to render it.

    `fetch(raw_dir)` makes the files exist under `raw_dir` (idempotent, cached) and returns
    the folder that `interactions` and `items` are relative to.
    """

    fetch: Callable[[str | Path], Path]
    interactions: str
    items: str
    text_fields: tuple[str, ...]
    template: str
    format: str = "recbole"


EMBEDDED_DATASETS: Registry[EmbeddedDataset] = Registry(
    "embedded dataset", "data.domains[].embedded"
)
