from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distrec.data.importers import (
    BadRows,
    DataError,
    parse_interactions,
    parse_items,
    read_table,
)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"


def test_recbole_header_types_are_stripped_and_crlf_handled(tmp_path):
    f = write(tmp_path / "a.inter", INTER + "u1\tA\t4\t10\r\nu1\tB\t5\t11\r\n")
    table = read_table(f, "recbole", BadRows("fail"))
    assert table.header == ["user_id", "item_id", "rating", "timestamp"]
    inter = parse_interactions(table, "user_id", "item_id", "timestamp", "rating", BadRows("fail"))
    assert inter.items.tolist() == ["A", "B"]
    assert inter.ratings.tolist() == [4.0, 5.0]
    assert inter.lines.tolist() == [2, 3]


def test_malformed_row_names_file_line_and_column(tmp_path):
    f = write(tmp_path / "a.inter", INTER + "u1\tA\t4\t10\nu2\tB\t5\n")
    with pytest.raises(DataError, match=r"a\.inter:3 column 4: malformed row: expected 4 fields"):
        read_table(f, "recbole", BadRows("fail"))


def test_skip_policy_drops_and_counts_bad_rows(tmp_path):
    f = write(tmp_path / "a.inter", INTER + "u1\tA\t4\t10\nu2\tB\t5\nu3\tC\t1\tyesterday\n")
    bad = BadRows("skip")
    inter = parse_interactions(
        read_table(f, "recbole", bad), "user_id", "item_id", "timestamp", "rating", bad
    )
    assert inter.users.tolist() == ["u1"]
    assert bad.total == 2
    assert any("yesterday" in e for e in bad.examples)


def test_bad_timestamp_fails_with_column_name(tmp_path):
    f = write(tmp_path / "a.inter", INTER + "u3\tC\t1\tyesterday\n")
    with pytest.raises(DataError, match=r"a\.inter:2 column 'timestamp'.*'yesterday'"):
        parse_interactions(
            read_table(f, "recbole", BadRows("fail")),
            "user_id",
            "item_id",
            "timestamp",
            "rating",
            BadRows("fail"),
        )


def test_missing_column_lists_what_the_file_has(tmp_path):
    f = write(tmp_path / "a.inter", INTER + "u1\tA\t4\t10\n")
    with pytest.raises(DataError, match=r"missing column 'when' \(timestamp\).*'user_id'"):
        parse_interactions(
            read_table(f, "recbole", BadRows("fail")),
            "user_id",
            "item_id",
            "when",
            None,
            BadRows("fail"),
        )


def test_non_utf8_is_located(tmp_path):
    f = write(tmp_path / "a.inter", INTER.encode() + b"u1\tCaf\xe9\t4\t10\n")
    with pytest.raises(DataError, match=r"a\.inter:2 column 2: non-UTF-8 text.*iconv"):
        read_table(f, "recbole", BadRows("fail"))
    bad = BadRows("skip")
    assert read_table(f, "recbole", bad).rows == []
    assert bad.total == 1


ITEMS = "item_id:token\ttitle:token\tyear:token\n"


def test_identical_duplicate_items_merge_and_conflicts_fail(tmp_path):
    f = write(tmp_path / "a.item", ITEMS + "A\tAlpha\t1990\nA\tAlpha\t1990\nB\tBeta\t1991\n")
    items = parse_items(
        read_table(f, "recbole", BadRows("fail")), "item_id", ["title", "year"], BadRows("fail")
    )
    assert items.duplicate_rows_merged == 1 and set(items.rows) == {"A", "B"}
    g = write(tmp_path / "b.item", ITEMS + "A\tAlpha\t1990\nA\tAlpha\t1995\n")
    with pytest.raises(
        DataError, match=r"b\.item:3 column 'item_id': duplicate item id 'A' .* line 2"
    ):
        parse_items(
            read_table(g, "recbole", BadRows("fail")), "item_id", ["title", "year"], BadRows("fail")
        )
    bad = BadRows("skip")
    items = parse_items(read_table(g, "recbole", bad), "item_id", ["title", "year"], bad)
    assert items.rows["A"] == ("Alpha", "1990") and bad.total == 1


def test_csv_with_quotes_and_column_mapping(tmp_path):
    f = write(tmp_path / "log.csv", 'uid,iid,ts\n7,"Dune, Part One",100\n7,Heat,101\n')
    inter = parse_interactions(
        read_table(f, "csv", BadRows("fail")), "uid", "iid", "ts", None, BadRows("fail")
    )
    assert inter.items.tolist() == ["Dune, Part One", "Heat"] and inter.ratings is None


def test_parquet_rows_are_numbered(tmp_path):
    f = tmp_path / "log.parquet"
    pd.DataFrame({"u": ["a", "b"], "i": ["x", "y"], "t": ["1", "oops"]}).to_parquet(f)
    with pytest.raises(DataError, match=r"log\.parquet:2 column 't'"):
        parse_interactions(
            read_table(f, "parquet", BadRows("fail")), "u", "i", "t", None, BadRows("fail")
        )


def _csv_times(tmp_path: Path, stamps: list[str], bad: BadRows | None = None):
    rows = "".join(f"u{k},i{k},{stamp}\n" for k, stamp in enumerate(stamps))
    f = write(tmp_path / "log.csv", "user,item,when\n" + rows)
    bad = bad or BadRows("fail")
    return parse_interactions(read_table(f, "csv", bad), "user", "item", "when", None, bad)


NOON = 1_709_294_400.0  # 2024-03-01T12:00:00Z


def test_iso_times_are_utc_seconds_with_offsets_applied(tmp_path):
    stamps = [
        "2024-03-01T12:00:00Z",
        "2024-03-01 14:00:00+02:00",  # the same instant
        "2024-03-01T07:00:00-05:00",  # and again
        "2024-03-01 12:00:00",  # no offset: UTC
        "2024-03-01",  # a date: its UTC midnight
        "2024-03-01T12:00:00.25Z",
        "2024-03-01T14:00:00.123456+02:00",
    ]
    seconds = _csv_times(tmp_path, stamps).timestamps
    assert seconds.dtype == np.float64
    assert seconds[:4].tolist() == [NOON] * 4
    assert seconds[4] == NOON - 12 * 3600
    assert seconds[5] == NOON + 0.25
    assert seconds[6] == pytest.approx(NOON + 0.123456, abs=1e-6) and seconds[6] != NOON


def test_recbole_atomic_file_reads_iso_times(tmp_path):
    f = write(tmp_path / "a.inter", INTER + "u1\tA\t4\t2024-03-01T12:00:00Z\n")
    inter = parse_interactions(
        read_table(f, "recbole", BadRows("fail")),
        "user_id",
        "item_id",
        "timestamp",
        "rating",
        BadRows("fail"),
    )
    assert inter.timestamps.tolist() == [NOON]


def test_numeric_timestamps_are_read_as_before(tmp_path):
    seconds = _csv_times(tmp_path, ["1709294400", "1.5", " 7 ", "2024"]).timestamps
    assert seconds.tolist() == [NOON, 1.5, 7.0, 2024.0]  # 2024 is a number, not a year


def test_an_unparsable_time_is_a_located_bad_row(tmp_path):
    stamps = ["2024-03-01T12:00:00Z", "2024-02-30T12:00:00Z", "2024-03-01T13:00:00Z"]
    with pytest.raises(
        DataError,
        match=r"log\.csv:3 column 'when': unreadable timestamp: '2024-02-30T12:00:00Z' is "
        r"neither a number nor an ISO-8601 time; timestamps must be numbers \(unix seconds\) "
        r"or ISO-8601 times .*2024-03-01 12:00:00\+02:00",
    ):
        _csv_times(tmp_path, stamps)
    bad = BadRows("skip")
    inter = _csv_times(tmp_path, stamps, bad)
    assert inter.timestamps.tolist() == [NOON, NOON + 3600] and inter.lines.tolist() == [2, 4]
    assert bad.counts == {"unreadable timestamp": 1}


def test_times_in_a_column_of_numbers_are_bad_rows(tmp_path):
    with pytest.raises(
        DataError,
        match=r"log\.csv:3 column 'when': mixed timestamp kinds: '2024-03-01T12:00:00Z' is an "
        r"ISO-8601 time, but the column holds numbers \(from its first timestamp, line 2\)",
    ):
        _csv_times(tmp_path, ["1709294400", "2024-03-01T12:00:00Z"])


def test_the_first_readable_value_sets_the_column_kind(tmp_path):
    stamps = ["oops", "2024-03-01T12:00:00Z", "1709294400", "2024-03-01T13:00:00Z"]
    bad = BadRows("skip")
    inter = _csv_times(tmp_path, stamps, bad)
    assert inter.timestamps.tolist() == [NOON, NOON + 3600] and inter.lines.tolist() == [3, 5]
    assert bad.counts == {"unreadable timestamp": 1, "mixed timestamp kinds": 1}
    assert bad.examples[1].endswith(
        "log.csv:4 column 'when': mixed timestamp kinds: '1709294400' is a number, but the "
        "column holds ISO-8601 times (from its first timestamp, line 3)"
    )


def _stamp_column(kind: pa.DataType, values: list) -> pa.Table:
    n = len(values)
    return pa.table(
        {
            "u": [f"u{k}" for k in range(n)],
            "i": [f"i{k}" for k in range(n)],
            "t": pa.array(values, kind),
        }
    )


PARQUET_TIMES = [
    (pa.timestamp("s"), [1_709_294_400], NOON),
    (pa.timestamp("ms"), [1_709_294_400_250], NOON + 0.25),
    (pa.timestamp("us", tz="UTC"), [1_709_294_400_123_456], NOON + 0.123456),
    (pa.timestamp("ns"), [1_709_294_400_000_000_500], NOON + 5e-7),
    (pa.timestamp("ms", tz="Europe/Berlin"), [1_709_294_400_000], NOON),  # instants: UTC
    (pa.date32(), [19_783], NOON - 12 * 3600),
    (pa.date64(), [1_709_251_200_000], NOON - 12 * 3600),
]


@pytest.mark.parametrize(("kind", "values", "seconds"), PARQUET_TIMES)
def test_parquet_timestamp_and_date_columns(tmp_path, kind, values, seconds):
    f = tmp_path / "log.parquet"
    pq.write_table(_stamp_column(kind, values), f)
    inter = parse_interactions(
        read_table(f, "parquet", BadRows("fail")), "u", "i", "t", None, BadRows("fail")
    )
    # float64 holds present-day seconds to 2.4e-7: the fraction is kept to that
    assert inter.timestamps[0] - NOON == pytest.approx(seconds - NOON, abs=2.5e-7)


def test_parquet_null_time_is_a_bad_row(tmp_path):
    f = tmp_path / "log.parquet"
    pq.write_table(_stamp_column(pa.timestamp("ms", tz="UTC"), [1_709_294_400_000, None]), f)
    with pytest.raises(DataError, match=r"log\.parquet:2 column 't': unreadable timestamp: ''"):
        parse_interactions(
            read_table(f, "parquet", BadRows("fail")), "u", "i", "t", None, BadRows("fail")
        )
