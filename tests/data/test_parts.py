"""The Ray engine's typing of a log chunk (distrec/data/parts.py) is the local importer's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrec.data.importers import BadRows, parse_interactions, read_table
from distrec.data.parts import LogColumns, plan_chunks, read_chunk

COLUMNS = LogColumns(user="u", item="i", timestamp="t", rating=None)
START = 1_709_294_400_123_456_789  # 2024-03-01T12:00:00.123456789Z in ns; steps of 25 h


def _log(tmp_path, stamps: pa.Array):
    n = len(stamps)
    path = tmp_path / "log.parquet"
    table = pa.table({"u": [f"u{k % 3}" for k in range(n)], "i": ["x"] * n, "t": stamps})
    pq.write_table(table, path, row_group_size=4)
    return path


def _both_engines(path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    local_bad = BadRows("skip")
    local = parse_interactions(
        read_table(path, "parquet", local_bad), "u", "i", "t", None, local_bad
    )
    chunks = plan_chunks([str(path)], "parquet", tasks=100)
    assert len(chunks) > 1  # the kind of a text column must cross chunk boundaries
    typed = [read_chunk(chunk, COLUMNS, pa.array(["x"])) for chunk in chunks]
    ray_ts = np.concatenate([t["ts"].to_numpy() for t, _ in typed])
    ray_bad = [e for _, report in typed for e in report.stages[1].examples]
    return local.timestamps, ray_ts, local_bad.examples, ray_bad


@pytest.mark.parametrize(
    "kind",
    [
        pa.timestamp("ns"),
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("ms", tz="America/New_York"),
        pa.timestamp("s"),
        pa.date32(),
        pa.date64(),
    ],
)
def test_parquet_time_columns_type_as_locally(tmp_path, kind):
    ticks = pa.array(
        [START + k * 90_000_123_456_789 for k in range(10)] + [None], pa.timestamp("ns")
    )
    stamps = ticks.cast(kind, safe=False)
    local, ray_ts, local_bad, ray_bad = _both_engines(_log(tmp_path, stamps))
    assert ray_ts.tolist() == local.tolist()
    assert len(local) == 10 and np.all(np.diff(local) > 0)
    assert ray_bad == local_bad and "unreadable timestamp: ''" in local_bad[0]


def test_a_text_column_keeps_its_first_values_kind_in_every_chunk(tmp_path):
    stamps = ["", "2024-03-01T12:00:00.5Z", "2024-03-01 14:00:01+02:00", "x"]
    stamps += ["1709294400", "2024-03-01", "1709294401", "2024-03-02T00:00:00+05:30"]
    local, ray_ts, local_bad, ray_bad = _both_engines(_log(tmp_path, pa.array(stamps)))
    assert ray_ts.tolist() == local.tolist() and len(local) == 4
    assert ray_bad == local_bad and len(local_bad) == 4
    assert (
        "log.parquet:5 column 't': mixed timestamp kinds: '1709294400' is a number"
        in (local_bad[2])
    )
    assert "(from its first timestamp, line 2)" in ray_bad[3]
