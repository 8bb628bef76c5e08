"""A domain's data as training sees it: the category field behind ild_category@K."""

import logging
import shutil

import pytest
import yaml

from distrec.config import ConfigError, config_from_dict
from distrec.train.domains import read_domain
from distrec.train.entry import run_training
from distrec.utils.hashing import sha256_file
from tests.conftest import tiny_run_config
from tests.train.test_extending import train


def test_category_field_adds_categorical_diversity_and_a_wrong_field_is_refused(
    synth_dir, tmp_path
):
    domains = [
        {"name": "tiny", "format": "prepared"},
        {"name": "tiny-b", "format": "prepared", "category_field": "genre"},
    ]
    stages = {"pretrain": {"enabled": False}, "zero_shot": False, "adapt": {"enabled": False}}
    stages |= {"baselines": ["popularity"]}
    found = train(tmp_path, synth_dir, "genre", data={"domains": domains}, stages=stages)
    test = found["baseline_popularity"]["test"]
    assert 0.0 < test["ild_category@10"] <= 1.0
    domains[1]["category_field"] = "colour"
    cfg = tiny_run_config(synth_dir, tmp_path / "colour", data={"domains": domains}, stages=stages)
    (tmp_path / "colour.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"category_field='colour' is not an item field.*genre"):
        run_training(str(tmp_path / "colour.yaml"))


def _flip(path, offset=200):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_training_verifies_the_prepared_files_it_reads(synth_dir, tmp_path, caplog):
    shutil.copytree(synth_dir, tmp_path / "prepared")
    cfg = config_from_dict(tiny_run_config(tmp_path / "prepared", tmp_path / "run"))
    read_domain(cfg, "tiny")  # intact
    shard = sorted((tmp_path / "prepared" / "tiny" / "shards").glob("*.tar"))[0]
    recorded = sha256_file(shard)
    _flip(shard)
    with pytest.raises(ConfigError) as caught:
        read_domain(cfg, "tiny")
    message = str(caught.value)
    assert f"{shard}: sha256 {sha256_file(shard)}, the manifest records {recorded}" in message
    assert "distrec data prepare --overwrite" in message
    # Shards streamed from elsewhere are not the local files: only the catalog is checked.
    remote = cfg.data.model_copy(update={"shard_url": "{root}/shards/{shard}"})
    read_domain(cfg.model_copy(update={"data": remote}), "tiny")
    # data.corrupt_shards=skip tolerates damaged shards (loudly), not a damaged catalog.
    skip = cfg.data.model_copy(update={"corrupt_shards": "skip"})
    skipping = cfg.model_copy(update={"data": skip})
    with caplog.at_level(logging.WARNING):
        read_domain(skipping, "tiny")
    assert shard.name in caplog.text and "corrupt_shards=skip" in caplog.text
    _flip(tmp_path / "prepared" / "tiny" / "catalog.parquet", offset=50)
    with pytest.raises(ConfigError, match=r"catalog\.parquet: sha256 "):
        read_domain(skipping, "tiny")
