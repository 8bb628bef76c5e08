"""Each section checks its own fields; RunConfig adds the checks that span sections."""

import pytest
from pydantic import ValidationError

from distrec.config import ConfigError, config_from_dict, dump_config
from distrec.config.schema import (
    DataConfig,
    DomainConfig,
    EvalConfig,
    ModelConfig,
    PeftConfig,
    RunConfig,
    StagesConfig,
)

ML = {"name": "a", "embedded": "ml-1m"}


@pytest.mark.parametrize(
    ("section", "tree", "message"),
    [
        (DataConfig, {"domains": [ML, ML]}, r"domain names \['a'\] appear twice"),
        (DataConfig, {"domains": [{"name": "a"}]}, "neither `embedded` nor `interactions`"),
        (DataConfig, {"domains": [ML], "target": "b"}, r"data.target: unknown domain 'b'"),
        (DataConfig, {"domains": [ML], "sources": ["a"], "mixture": {"a": 0.0}}, "must be > 0"),
        (DataConfig, {"domains": [ML], "mixture": {"a": 1.0}}, r"'a' is not in data.sources"),
        (ModelConfig, {"dim": 30, "user_tower": {"heads": 4}}, "not divisible by model.user_tower"),
        (PeftConfig, {"method": "adalora", "adalora": {"init_r": 2}}, "only prunes rank"),
        (EvalConfig, {"ks": [0, 10]}, "every K must be positive"),
    ],
)
def test_a_section_checks_itself(section, tree, message):
    with pytest.raises(ValidationError, match=message):
        section.model_validate(tree)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"data": {"domains": [ML]}},
            r"^.*\n  - stages.pretrain is enabled but data.sources is empty",
        ),
        (
            {"data": {"domains": [ML], "sources": ["a"]}},
            r"\n  - stages zero_shot/adapt/baselines need data.target",
        ),
        (
            {"tune": {"search_space": {"train.lr": {"choice": [1e-3]}}}},
            r"\n  - tune.stage=adapt with stages.adapt.mode=auto",
        ),
        ({"stages": {"pretrain": {"enabled": False}}}, r"\n  - stages.zero_shot=true evaluates"),
    ],
)
def test_cross_section_checks_run_on_the_whole_config(tree, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tree)


def test_section_errors_name_the_key_once():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"resampled": True}})
    assert str(err.value).endswith(
        "\n  - data.resampled=true needs data.epoch_batches (a resampled stream has no natural end)"
    )


def test_a_prepared_domain_needs_no_files():
    d = DataConfig.model_validate({"domains": [{"name": "p", "format": "prepared"}]})
    assert d.domains[0].format == "prepared"


def test_registered_names_are_plain_strings_checked_later():
    # Formats, embedded datasets, heads, architectures and extra stages come from registries
    # that the data/models/train layers own, so the schema accepts any name.
    cfg = config_from_dict(
        {
            "model": {"heads": {"my_head": 1.0}, "architecture": "id_only"},
            "stages": {"extra": ["probe", "export"]},
        }
    )
    assert (cfg.model.heads, cfg.model.architecture) == ({"my_head": 1.0}, "id_only")
    assert cfg.stages.extra == ["probe", "export"]
    assert DomainConfig(name="x", format="jsonl", embedded="amazon").format == "jsonl"


def test_new_fields_have_their_defaults():
    cfg = RunConfig()
    assert cfg.model.heads == {"retrieval": 1.0} and cfg.model.architecture == "two_tower"
    assert cfg.stages.adapt.heads is None and cfg.eval.ctr_negatives == 20
    assert cfg.stages.extra == [] and StagesConfig().extra is not StagesConfig().extra
    assert (cfg.data.domains, DomainConfig(name="x").format) == ([], "recbole")
    assert "architecture: two_tower" in dump_config(cfg) and "extra: []" in dump_config(cfg)


def test_fields_stay_strict():
    with pytest.raises(ConfigError, match=r"model\.head='rating' was replaced by model\.heads"):
        config_from_dict({"model": {"head": "rating"}})
    with pytest.raises(ConfigError, match=r"model\.heads: weights \{'ctr': 0\.0\} must be > 0"):
        config_from_dict({"model": {"heads": {"retrieval": 1.0, "ctr": 0.0}}})
    with pytest.raises(ConfigError, match=r"model\.heads is empty"):
        config_from_dict({"model": {"heads": {}}})
    with pytest.raises(ConfigError, match=r"stages\.adapt\.heads: weights"):
        config_from_dict({"stages": {"adapt": {"heads": {"rating": -1.0}}}})
    with pytest.raises(
        ConfigError, match=r"model\.rating_range=\[5\.0, 1\.0\]: expected \[low, high\]"
    ):
        config_from_dict({"model": {"rating_range": [5.0, 1.0]}})
    with pytest.raises(ConfigError, match=r"ctr_hard_negatives=5 > ctr_negatives=4"):
        config_from_dict({"model": {"ctr_hard_negatives": 5}})
    with pytest.raises(ConfigError, match=r"stages\.extra"):
        config_from_dict({"stages": {"extra": "probe"}})
