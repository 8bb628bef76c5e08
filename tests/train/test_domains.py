"""A domain's data as training sees it: the category field behind ild_category@K."""

import pytest
import yaml

from distrec.config import ConfigError
from distrec.train.entry import run_training
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
