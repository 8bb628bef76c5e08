"""A toy dataset format, added as a plugin would be: JSON lines (`format: jsonl`).

One JSON object per line; the first object's keys are the columns. Values are kept as
their text (`4.5` -> "4.5"), a missing key or a null is an empty field, so the rows read
exactly like the same data in CSV. Load it with `DISTREC_PLUGINS=tests/extensions/jsonl_format.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from distrec.data.formats import FORMATS
from distrec.data.importers import decode_lines
from distrec.data.table import BadRows, DataError, Table


@FORMATS.register("jsonl")
def read_jsonl(path: Path, bad: BadRows) -> Table:
    """One JSON object per line; the first object's keys are the header."""
    header: list[str] | None = None
    rows, lines = [], []
    for number, text in decode_lines(path, bad):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            where = f"{path}:{number} column {err.colno}"
            bad.report(where, f"invalid JSON: {err.msg}", "write one JSON object per line")
            continue
        if not isinstance(record, dict):
            bad.report(f"{path}:{number} column 1", "not a JSON object", "write {key: value}")
            continue
        header = header or list(record)
        rows.append([_text(record.get(key)) for key in header])
        lines.append(number)
    if header is None:
        raise DataError(f"{path}: no JSON objects; expected one object per line")
    return Table(path, header, rows, lines)


def _text(value: object) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)
