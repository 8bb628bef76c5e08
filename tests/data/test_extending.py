"""A dataset format added as a plugin (tests/extensions/jsonl_format.py) prepares exactly
like a built-in one: the same data as JSON lines and as CSV give the same dataset."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distrec.config import ConfigError, config_from_dict
from distrec.data.formats import EMBEDDED_DATASETS, FORMATS
from distrec.data.manifest import load_manifest
from distrec.data.prepare import check_data_names, prepare_domains
from distrec.data.shards import read_shard
from distrec.utils.plugins import load_plugins
from tests.conftest import ROOT, python
from tests.extensions import jsonl_format

LOG = [
    {"uid": "u1", "iid": "A, x", "ts": 10, "stars": 4},
    {"uid": "u1", "iid": "B", "ts": 11, "stars": 3.5},
    {"uid": "u1", "iid": "C", "ts": 11, "stars": 5},
    {"uid": "u2", "iid": "B", "ts": 1, "stars": 2},
    {"uid": "u2", "iid": "A, x", "ts": 2, "stars": 5},
    {"uid": "u2", "iid": "C", "ts": 3, "stars": 1},
    {"uid": "u3", "iid": "C", "ts": 7, "stars": 2},
]
ITEMS = [
    {"iid": "A, x", "title": "Alpha", "year": 1990},
    {"iid": "B", "title": "Beta", "year": 1991},
    {"iid": "C", "title": "Gamma", "year": 1992},
    {"iid": "D", "title": "Delta", "year": 1993},
]


def _write_both(folder: Path, name: str, records: list[dict]) -> tuple[Path, Path]:
    jsonl, csv = folder / f"{name}.jsonl", folder / f"{name}.csv"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    pd.DataFrame(records).astype(str).to_csv(csv, index=False)
    return jsonl, csv


def _domain(name: str, fmt: str, log: Path, items: Path) -> dict:
    return {
        "name": name,
        "format": fmt,
        "interactions": str(log),
        "items": str(items),
        "columns": {"user": "uid", "item": "iid", "timestamp": "ts", "rating": "stars"},
        "item_id_column": "iid",
        "text_fields": ["title", "year"],
        "template": "{title} ({year})",
        "users_per_shard": 2,
    }


def _config(tmp_path: Path, domains: list[dict]):
    return config_from_dict(
        {
            "data": {
                "prepared_dir": str(tmp_path / "prepared"),
                "domains": domains,
                "sources": [d["name"] for d in domains],
            },
            "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
        }
    )


def _samples(root: Path) -> list[dict]:
    out = []
    for shard in sorted((root / "shards").glob("*.tar")):
        out.extend(read_shard(str(shard)))
    return out


def test_jsonl_plugin_prepares_the_same_dataset_as_csv(tmp_path):
    assert FORMATS.get("jsonl") is jsonl_format.read_jsonl
    log_jsonl, log_csv = _write_both(tmp_path, "log", LOG)
    items_jsonl, items_csv = _write_both(tmp_path, "items", ITEMS)
    cfg = _config(
        tmp_path,
        [
            _domain("as-jsonl", "jsonl", log_jsonl, items_jsonl),
            _domain("as-csv", "csv", log_csv, items_csv),
        ],
    )
    jsonl_manifest, csv_manifest = (load_manifest(p) for p in prepare_domains(cfg))

    assert jsonl_manifest.counts == csv_manifest.counts
    assert jsonl_manifest.counts["users"] == 3 and jsonl_manifest.counts["items"] == 3
    jsonl_catalog = pd.read_parquet(jsonl_manifest.catalog_path)
    pd.testing.assert_frame_equal(jsonl_catalog, pd.read_parquet(csv_manifest.catalog_path))
    assert jsonl_catalog.text.tolist() == ["Alpha (1990)", "Beta (1991)", "Gamma (1992)"]
    jsonl_samples, csv_samples = _samples(jsonl_manifest.root), _samples(csv_manifest.root)
    assert [s["user"] for s in jsonl_samples] == ["u1", "u2", "u3"]
    for got, want in zip(jsonl_samples, csv_samples, strict=True):
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # u1's tie at ts=11 keeps file order: B before C
    assert list(jsonl_samples[0]["items"]) == [1, 2, 3]


def test_jsonl_bad_rows_are_located(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps(LOG[0]) + "\n{not json\n" + json.dumps(LOG[1]) + "\n")
    items, _ = _write_both(tmp_path, "items", ITEMS)
    cfg = _config(tmp_path, [_domain("bad", "jsonl", log, items)])
    with pytest.raises(ConfigError, match=r"log\.jsonl:2 column 2: invalid JSON"):
        prepare_domains(cfg)


def test_unknown_names_list_the_registered_ones(tmp_path):
    log, items = tmp_path / "l.csv", tmp_path / "i.csv"
    cfg = _config(tmp_path, [_domain("d", "xml", log, items)])
    with pytest.raises(ConfigError) as err:
        check_data_names(cfg)
    message = str(err.value)
    assert "data.domains.0 ('d')" in message and "format='xml'" in message
    assert all(name in message for name in ("recbole", "csv", "parquet", "prepared"))
    with pytest.raises(ConfigError, match="format='xml'"):
        prepare_domains(cfg)  # also refused at prepare time, before any file is read

    embedded = config_from_dict(
        {
            "data": {"domains": [{"name": "m", "embedded": "ml-20m"}], "sources": ["m"]},
            "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
        }
    )
    with pytest.raises(ConfigError, match=r"embedded='ml-20m'.*'ml-100k', 'ml-1m'"):
        check_data_names(embedded)
    assert {"ml-1m", "ml-100k"} <= set(EMBEDDED_DATASETS.names())


def test_plugin_files_load_from_the_environment_variable(tmp_path):
    plugin = tmp_path / "tsv_plugin.py"
    plugin.write_text(
        "from distrec.data.formats import FORMATS\n"
        "from distrec.data.importers import read_recbole\n\n"
        'FORMATS.add("toy-tsv", read_recbole)\n'
    )
    assert load_plugins(f" {plugin} ,") == ["distrec_plugin_tsv_plugin"]
    assert load_plugins(str(plugin)) == ["distrec_plugin_tsv_plugin"]  # idempotent
    assert "toy-tsv" in FORMATS
    with pytest.raises(ConfigError, match="DISTREC_PLUGINS: cannot import plugin 'no_such_mod'"):
        load_plugins("no_such_mod")


@pytest.mark.integration
def test_cli_loads_plugins_before_checking_names(tmp_path):
    log_jsonl, _ = _write_both(tmp_path, "log", LOG)
    items_jsonl, _ = _write_both(tmp_path, "items", ITEMS)
    config = tmp_path / "run.yaml"
    domain = _domain("j", "jsonl", log_jsonl, items_jsonl)
    config.write_text(
        json.dumps(
            {
                "data": {
                    "prepared_dir": str(tmp_path / "p"),
                    "domains": [domain],
                    "sources": ["j"],
                },
                "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
            }
        )
    )
    run = [python(), "-m", "distrec.cli", "data", "prepare", "--config", str(config)]
    refused = subprocess.run(run, capture_output=True, text=True, cwd=ROOT, check=False)
    assert refused.returncode == 2 and "format='jsonl'" in refused.stderr
    env_plugin = {"DISTREC_PLUGINS": "tests/extensions/jsonl_format.py"}
    done = subprocess.run(
        run, capture_output=True, text=True, cwd=ROOT, check=False, env=_env(env_plugin)
    )
    assert done.returncode == 0, done.stderr
    assert load_manifest(tmp_path / "p" / "j").counts["users"] == 3


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}
