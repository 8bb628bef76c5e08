from pathlib import Path

import pandas as pd
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
