"""The Ray engine prepares the local engine's domain: same users, catalog, split and shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distrec.config import ConfigError, config_from_dict
from distrec.data import parts, writer
from distrec.data.manifest import load_manifest
from distrec.data.prepare import prepare_domains
from distrec.data.prepare_ray import prepare_domains_ray
from distrec.data.shards import read_sequences

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.integration  # starts a Ray cluster (2 CPUs) for the module


@pytest.fixture(scope="module", autouse=True)
def small_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(out: Path, domain: dict) -> object:
    return config_from_dict(
        {
            "data": {"prepared_dir": str(out), "domains": [domain], "sources": [domain["name"]]},
            "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
        }
    )


def _domain(inter: Path, items: Path, **extra) -> dict:
    return {
        "name": "d",
        "format": "parquet",
        "interactions": str(inter),
        "items": str(items),
        "columns": {"rating": "rating"},
        "text_fields": ["title"],
        "template": "{title}!",
        "users_per_shard": 7,
        **extra,
    }


def _content(manifest: Path) -> tuple[dict, pd.DataFrame, list[dict]]:
    loaded = load_manifest(manifest)
    users = []
    for s in read_sequences(loaded.shard_urls()):
        n = len(s["items"])
        split = ["train"] * (n - 2) + ["valid", "test"] if n >= 3 else ["train"] * n
        users.append({**s, "ts": s["ts"].tolist(), "split": split})
    return loaded.data, pd.read_parquet(loaded.catalog_path), users


def assert_same_domain(local: Path, on_ray: Path) -> None:
    """Counts, catalog, per-user content and split, shard files and fingerprint all equal."""
    (local_manifest, local_catalog, local_users) = _content(local)
    (ray_manifest, ray_catalog, ray_users) = _content(on_ray)
    assert ray_manifest["counts"] == local_manifest["counts"]
    assert ray_manifest["fingerprint"] == local_manifest["fingerprint"]
    assert ray_manifest["bad_row_examples"] == local_manifest["bad_row_examples"]
    pd.testing.assert_frame_equal(ray_catalog, local_catalog)
    assert ray_users == local_users
    # same users per shard in the same order: the shard files are byte-identical
    assert ray_manifest["shards"] == local_manifest["shards"]


def test_movielens_100k_matches_the_local_engine(movielens_raw, tmp_path):
    domain = {"name": "ml-100k", "embedded": "ml-100k", "users_per_shard": 50}
    raw = {"raw_dir": str(movielens_raw)}
    local = _config(tmp_path / "local", domain)
    local = local.model_copy(update={"data": local.data.model_copy(update=raw)})
    on_ray = local.model_copy(
        update={"data": local.data.model_copy(update={"prepared_dir": str(tmp_path / "ray")})}
    )
    (local_manifest,) = prepare_domains(local)
    (ray_manifest,) = prepare_domains_ray(on_ray)
    assert load_manifest(ray_manifest).counts["interactions"] == 100_000
    assert_same_domain(local_manifest, ray_manifest)


def synthetic_log(rng: np.random.Generator, rows: int = 3000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A raw log with timestamp ties, repeated pairs, short users, unknown items and bad rows."""
    users = rng.geometric(0.02, rows).astype(str)
    items = np.char.add("i", rng.zipf(1.5, rows).clip(max=300).astype(str))
    log = pd.DataFrame(
        {
            "user_id": np.char.add("u", users),
            "item_id": items,
            "timestamp": rng.integers(0, 50, rows).astype(str),  # many ties
            "rating": rng.integers(1, 6, rows).astype(float).astype(str),
        }
    )
    log.loc[rng.choice(rows, 5, replace=False), "timestamp"] = "soon"
    log.loc[rng.choice(rows, 3, replace=False), "timestamp"] = " 7"  # float() takes it
    log.loc[rng.choice(rows, 4, replace=False), "user_id"] = " "
    log.loc[rng.choice(rows, 4, replace=False), "rating"] = "n/a"
    log.loc[rng.choice(rows, 6, replace=False), "item_id"] = "not-in-the-table"
    ids = [f"i{k}" for k in range(1, 301)]
    titles = [f"T{k}" for k in ids]
    table = pd.DataFrame({"item_id": [*ids, "i1"], "title": [*titles, "Ti1"]})  # a merged duplicate
    return log, table


def _write_inputs(tmp_path: Path, log: pd.DataFrame, table: pd.DataFrame) -> tuple[Path, Path]:
    inter, items = tmp_path / "log.parquet", tmp_path / "items.parquet"
    log.to_parquet(inter, index=False, row_group_size=500)
    table.to_parquet(items, index=False)
    return inter, items


def test_a_synthetic_log_matches_the_local_engine(tmp_path, monkeypatch):
    log, table = synthetic_log(np.random.default_rng(0))
    inter, items = _write_inputs(tmp_path, log, table)
    domain = _domain(inter, items, on_bad_rows="skip", k_core=2)
    (local_manifest,) = prepare_domains(_config(tmp_path / "local", domain))
    # several read tasks per file: bad rows must still be reported in file order
    monkeypatch.setattr(parts, "ROWS_PER_CHUNK", 1000)
    (ray_manifest,) = prepare_domains_ray(_config(tmp_path / "ray", domain))
    counts = load_manifest(ray_manifest).counts
    skipped = counts["bad_rows_skipped"]["interactions"]
    assert len(skipped) == 4 and sum(skipped.values()) >= 15  # every kind of bad row is met
    assert counts["repeated_user_item_pairs"] > 0 and counts["train_only_users"] >= 0
    assert_same_domain(local_manifest, ray_manifest)


def test_typed_parquet_columns_match_the_local_engine(tmp_path):
    """Integer ids, nanosecond stamps (beyond 2**53), float32 ratings, nulls: Arrow types
    them column-wise as the local importer's str()/float() does row by row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    rows = 800
    stamps = 1_600_000_000_000_000_000 + rng.integers(0, 40, rows) * 1_000_000_001
    log = pa.table(
        {
            "user_id": pa.array(rng.integers(0, 60, rows)),
            "item_id": pa.array(rng.integers(0, 90, rows)),
            "timestamp": pa.array([None if k % 97 == 5 else int(t) for k, t in enumerate(stamps)]),
            "rating": pa.array(rng.random(rows).astype(np.float32) * 5),
        }
    )
    inter, items = tmp_path / "log.parquet", tmp_path / "items.parquet"
    pq.write_table(log, inter, row_group_size=100)
    ids = np.arange(80)  # items 80..89 are unknown
    pq.write_table(pa.table({"item_id": ids, "title": [f"t{i}" for i in ids]}), items)
    domain = _domain(inter, items, on_bad_rows="skip")
    (local_manifest,) = prepare_domains(_config(tmp_path / "local", domain))
    (ray_manifest,) = prepare_domains_ray(_config(tmp_path / "ray", domain))
    skipped = load_manifest(ray_manifest).counts["bad_rows_skipped"]["interactions"]
    assert skipped["unreadable timestamp"] > 0
    assert_same_domain(local_manifest, ray_manifest)


def test_a_bad_row_is_the_same_located_error(tmp_path):
    inter, items = tmp_path / "log.csv", tmp_path / "items.csv"
    inter.write_text("user_id,item_id,timestamp\nu1,A,1\nu1,B,2\nu2,A,later\nu2,C,3\n")
    items.write_text("item_id,title\nA,Alpha\nB,Beta\n")
    domain = _domain(inter, items, format="csv", columns={})
    errors = []
    for engine, out in ((prepare_domains, "local"), (prepare_domains_ray, "ray")):
        with pytest.raises(ConfigError) as err:
            engine(_config(tmp_path / out, domain))
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert (
        f"{inter}:4 column 'timestamp': unreadable timestamp: 'later' is neither a number nor "
        f"an ISO-8601 time; timestamps must be numbers (unix seconds) or ISO-8601 times"
    ) in errors[1]


def test_a_folder_of_parts_is_one_log(tmp_path):
    log, table = synthetic_log(np.random.default_rng(1), rows=1200)
    inter, items = _write_inputs(tmp_path, log, table)
    folder = tmp_path / "log"
    folder.mkdir()
    thirds = [log.iloc[k * 400 : (k + 1) * 400] for k in range(3)]
    for k, part in enumerate(thirds):
        part.to_parquet(folder / f"part-{k}.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    domain = _domain(inter, items, on_bad_rows="skip")
    (local_manifest,) = prepare_domains(_config(tmp_path / "local", domain))
    in_parts = {**domain, "interactions": str(folder)}
    (ray_manifest,) = prepare_domains_ray(_config(tmp_path / "ray", in_parts))
    local, on_ray = _content(local_manifest), _content(ray_manifest)
    assert on_ray[0]["counts"] == local[0]["counts"]
    assert on_ray[2] == local[2]  # ties across parts kept in part, then row, order
    assert on_ray[0]["bad_row_examples"][0].startswith(f"{folder}/part-0.parquet:")
    # "file:line" names the part file, with the row number inside it
    good = log[(log.user_id != " ") & log.item_id.str.startswith("i")]
    good = good[good.timestamp.str.isdigit() & (good.rating != "n/a")]
    good.iloc[:400].to_parquet(folder / "part-0.parquet", index=False)
    bad = good.iloc[400:800].copy()
    bad.iloc[9, 2] = "whenever"
    bad.to_parquet(folder / "part-1.parquet", index=False)
    strict = {**in_parts, "on_bad_rows": "fail"}
    with pytest.raises(
        ConfigError,
        match=rf"^{folder}/part-1\.parquet:10 column 'timestamp': unreadable timestamp: 'whenever'",
    ):
        prepare_domains_ray(_config(tmp_path / "ray2", strict))


def test_the_command_line_runs_the_ray_engine_and_reports_driver_memory(tmp_path, capsys):
    from distrec.cli import main

    log, table = synthetic_log(np.random.default_rng(3), rows=400)
    inter, items = _write_inputs(tmp_path, log, table)
    config = tmp_path / "run.json"  # JSON is YAML
    cfg = _config(tmp_path / "out", _domain(inter, items, on_bad_rows="skip"))
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    assert main(["data", "prepare", "--config", str(config), "--engine", "ray"]) == 0
    printed = capsys.readouterr().out
    assert "prepared on Ray in" in printed and "driver peak RSS" in printed
    assert load_manifest(tmp_path / "out" / "d").counts["users"] > 0


def test_a_failed_ray_prepare_leaves_the_previous_domain_intact(tmp_path, monkeypatch):
    log, table = synthetic_log(np.random.default_rng(2), rows=600)
    inter, items = _write_inputs(tmp_path, log, table)
    cfg = _config(tmp_path / "out", _domain(inter, items, on_bad_rows="skip"))
    (manifest,) = prepare_domains_ray(cfg)
    before = manifest.read_text()
    prepare_domains(cfg)  # the same dataset: the local engine finds it current
    assert manifest.read_text() == before

    # A user id too long for a sample header: that shard's task fails mid-write.
    log.loc[len(log)] = ["u" * 70_000, "i1", "5", "1.0"]
    _write_inputs(tmp_path, log, table)
    with pytest.raises(ConfigError, match="already holds a different dataset"):
        prepare_domains_ray(cfg)
    with pytest.raises(Exception, match=r"65535|ushort|format requires"):
        prepare_domains_ray(cfg, overwrite=True)
    assert manifest.read_text() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d"]  # no staging debris

    # ... and a failure in the driver after the shards are written
    log = log.iloc[:-1]
    log.loc[0, "timestamp"] = "3"
    _write_inputs(tmp_path, log, table)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after the shards")

    monkeypatch.setattr(writer, "sha256_file", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_domains_ray(cfg, overwrite=True)
    assert manifest.read_text() == before
    assert json.loads(before)["counts"]["users"] > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d"]
