import errno
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds

from distrec.config import ConfigError, config_from_dict
from distrec.data import shards, writer
from distrec.data.manifest import damaged_files, load_manifest
from distrec.data.prepare import prepare_domains
from distrec.data.shards import decode_sample
from distrec.utils.files import OutOfSpace
from distrec.utils.hashing import sha256_file


def test_movielens_counts_match_the_published_files(prepared_dir):
    small = load_manifest(prepared_dir / "ml-100k").counts
    assert (small["users"], small["items"], small["interactions"]) == (943, 1664, 100_000)
    assert small["duplicate_item_rows_merged"] == 18
    assert small["repeated_user_item_pairs"] == 307
    big = load_manifest(prepared_dir / "ml-1m").counts
    assert (big["users"], big["items"], big["interactions"]) == (6040, 3706, 1_000_209)
    assert big["item_table_rows"] == 3883 and big["items_without_interactions"] == 177


def test_catalog_renders_template_and_counts_training_popularity(prepared_dir):
    catalog = pd.read_parquet(prepared_dir / "ml-100k" / "catalog.parquet")
    row = catalog[catalog.item_id == "Toy Story (1995)"].iloc[0]
    assert row.text == "Toy Story (1995). Genres: Animation Children's Comedy"
    assert catalog.item_index.tolist() == list(range(1, 1665))
    # every user holds out two interactions (valid + test)
    assert catalog.train_count.sum() == 100_000 - 2 * 943


def _domain_cfg(tmp_path: Path, rows: str, **extra) -> object:
    inter = tmp_path / "d.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows)
    items = tmp_path / "d.item"
    items.write_text("item_id:token\ttitle:token\nA\tAlpha\nB\tBeta\nC\tGamma\nD\tDelta\n")
    domain = {
        "name": "d",
        "interactions": str(inter),
        "items": str(items),
        "text_fields": ["title"],
        "template": "{title}",
        "users_per_shard": 1,
        **extra,
    }
    return config_from_dict(
        {
            "data": {"prepared_dir": str(tmp_path / "out"), "domains": [domain], "sources": ["d"]},
            "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
        }
    )


def _sequences(root: Path) -> dict[str, list[int]]:
    out = {}
    for shard in sorted((root / "shards").glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            s = decode_sample(sample)
            out[s["user"]] = s["items"]
    return out


def test_time_order_is_stable_for_ties(tmp_path):
    cfg = _domain_cfg(tmp_path, "u1\tC\t5\nu1\tA\t5\nu1\tB\t1\nu1\tD\t5\nu2\tA\t1\n")
    (manifest,) = prepare_domains(cfg)
    seqs = _sequences(manifest.parent)
    # B (t=1) first, then the t=5 ties in file order: C, A, D -> catalog indices A=1..D=4
    assert seqs["u1"] == [2, 3, 1, 4]
    assert load_manifest(manifest).counts["train_only_users"] == 1


def test_k_core_filters_iteratively(tmp_path):
    rows = "u1\tA\t1\nu1\tB\t2\nu2\tA\t1\nu2\tB\t2\nu3\tC\t1\n"
    (manifest,) = prepare_domains(_domain_cfg(tmp_path, rows, k_core=2))
    assert load_manifest(manifest).counts == load_manifest(manifest).counts | {
        "users": 2,
        "items": 2,
    }


def test_rerun_is_a_no_op_and_a_different_dataset_is_not_overwritten(tmp_path):
    cfg = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tB\t2\nu1\tC\t3\n")
    (manifest,) = prepare_domains(cfg)
    before = manifest.read_text()
    prepare_domains(cfg)
    assert manifest.read_text() == before
    changed = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tB\t2\nu1\tD\t3\n")
    with pytest.raises(ConfigError, match=r"already holds a different dataset.*--overwrite"):
        prepare_domains(changed)
    assert manifest.read_text() == before
    prepare_domains(changed, overwrite=True)
    assert json.loads(manifest.read_text())["fingerprint"] != json.loads(before)["fingerprint"]


def test_interrupted_prepare_leaves_previous_dataset_intact(tmp_path, monkeypatch):
    cfg = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tB\t2\nu1\tC\t3\n")
    (manifest,) = prepare_domains(cfg)
    before = manifest.read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(writer, "write_shards", crash)
    changed = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tB\t2\nu1\tD\t3\n")
    with pytest.raises(KeyboardInterrupt):
        prepare_domains(changed, overwrite=True)
    assert manifest.read_text() == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["d"]  # no staging debris


def test_unknown_item_is_a_located_error(tmp_path):
    cfg = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tZ\t2\n")
    with pytest.raises(
        ConfigError, match=r"d\.inter:3 column 'item': item 'Z' is not in the item table"
    ):
        prepare_domains(cfg)


def test_the_same_files_elsewhere_are_the_same_dataset(tmp_path):
    cfg = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tB\t2\nu1\tC\t3\n")
    (manifest,) = prepare_domains(cfg)
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("d.inter", "d.item"):
        (moved / name).write_bytes((tmp_path / name).read_bytes())
    d = cfg.data.domains[0].model_copy(
        update={"interactions": str(moved / "d.inter"), "items": str(moved / "d.item")}
    )
    again = cfg.model_copy(update={"data": cfg.data.model_copy(update={"domains": [d]})})
    before = manifest.read_text()
    prepare_domains(again)  # no --overwrite needed: same content
    assert manifest.read_text() == before


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in folder.rglob("*") if p.is_file()}


def test_a_full_disk_while_overwriting_leaves_the_prepared_domain_intact(tmp_path, monkeypatch):
    cfg = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tB\t2\nu1\tC\t3\nu2\tA\t1\nu2\tB\t2\nu2\tC\t3\n")
    (manifest,) = prepare_domains(cfg)
    root = manifest.parent
    before = _snapshot(root)
    real = shards.write_shard
    written = {"n": 0}

    def disk_full_after_one_shard(path, chunk):
        entry = real(path, chunk)
        if written["n"]:  # the second shard does not fit: 100 of its bytes got onto the disk
            with open(path, "r+b") as file:
                file.truncate(100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written["n"] += entry["bytes"]
        return entry

    monkeypatch.setattr(shards, "write_shard", disk_full_after_one_shard)
    changed = _domain_cfg(tmp_path, "u1\tA\t1\nu1\tB\t2\nu1\tD\t3\nu2\tA\t1\nu2\tB\t2\nu2\tC\t3\n")
    with pytest.raises(OutOfSpace) as caught:
        prepare_domains(changed, overwrite=True)
    message = str(caught.value)
    assert f"writing {root} (at " in message and "seq-000001.tar" in message
    assert f"{written['n'] + 100:,} bytes) were written" in message
    assert f"(the size of {root})" in message and "free there" in message
    assert "set data.prepared_dir" in message
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["d"]  # no staging debris
    assert _snapshot(root) == before  # 0 prepared domains damaged
    assert damaged_files(load_manifest(root)) == []


def test_iso_times_order_and_split_as_their_unix_seconds(tmp_path):
    """The same log with ISO-8601 times (mixed offsets, a naive time, fractions) and with
    unix seconds prepares the same histories, split and stored timestamps."""
    iso = [
        "u1\tC\t2024-03-01T12:00:00.750Z",
        "u1\tA\t2024-03-01 14:00:00.25+02:00",  # 12:00:00.25 UTC: before C
        "u1\tB\t2024-03-01 12:00:00",  # naive = UTC: before A
        "u1\tD\t2024-03-01T06:30:00.75-05:30",  # = C's instant: a tie kept in file order
        "u2\tA\t2024-03-01",
        "u2\tB\t2024-02-29T23:59:59.5Z",
        "u2\tC\t2024-03-01T00:00:00.5+00:00",
    ]
    noon = 1_709_294_400
    numbers = [noon + 0.75, noon + 0.25, noon, noon + 0.75, noon - 43200, noon - 43200.5]
    numbers.append(noon - 43199.5)
    unix = [f"{r.rsplit(chr(9), 1)[0]}\t{t!r}" for r, t in zip(iso, numbers, strict=True)]
    prepared = []
    for name, rows in (("iso", iso), ("unix", unix)):
        (tmp_path / name).mkdir()
        (manifest,) = prepare_domains(_domain_cfg(tmp_path / name, "\n".join(rows) + "\n"))
        loaded = load_manifest(manifest)
        prepared.append((loaded.counts, shards.read_sequences(loaded.shard_urls())))
    (iso_counts, iso_users), (unix_counts, unix_users) = prepared
    assert iso_counts == unix_counts and iso_counts["eval_users"] == 2
    assert [list(u["items"]) for u in iso_users] == [[2, 1, 3, 4], [2, 1, 3]]  # B A C D
    assert list(iso_users[0]["ts"]) == [noon, noon + 0.25, noon + 0.75, noon + 0.75]
    for a, b in zip(iso_users, unix_users, strict=True):
        assert list(a["items"]) == list(b["items"])
        assert list(a["ts"]) == list(b["ts"])
