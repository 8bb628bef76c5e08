from pathlib import Path

import pytest

from distrec.config import ConfigError, check_environment, config_from_dict, load_config
from distrec.config.load import apply_override
from distrec.distributed.launcher import check_launcher
from tests.conftest import ROOT

SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(path)
    check_environment(cfg, ROOT)
    check_launcher(cfg, ROOT)


def test_there_are_shipped_configs():
    assert any(p.name == "demo.yaml" for p in SHIPPED)


def test_overrides_are_typed_like_yaml():
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        [
            "train.lr=3e-4",
            "train.batch_size=8",
            "model.mode=end_to_end",
            "data.domains.1.users_per_shard=7",
            "eval.ks=[5,10]",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.batch_size == 8
    assert cfg.model.mode == "end_to_end" and cfg.data.domains[1].users_per_shard == 7
    assert cfg.eval.ks == [5, 10]


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(
        ConfigError, match=r"train\.lrr: unknown key \(did you mean 'train\.lr'\?\)"
    ):
        config_from_dict({"train": {"lrr": 0.1}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.batch_size='sixty-four'"):
        config_from_dict({"train": {"batch_size": "sixty-four"}})
    with pytest.raises(ConfigError, match=r"model\.pooling='max'"):
        config_from_dict({"model": {"pooling": "max"}})


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, "train.lr")
    with pytest.raises(ConfigError, match="not an index"):
        apply_override({"a": [1]}, "a.5=2")


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {
                "data": {
                    "domains": [{"name": "a", "embedded": "ml-1m"}],
                    "sources": ["a"],
                    "target": "a",
                }
            },
            "also in data.sources",
        ),
        (
            {"data": {"domains": [{"name": "a", "embedded": "ml-1m"}], "sources": ["x"]}},
            r"data.sources: unknown domain 'x'",
        ),
        (
            {"model": {"mode": "cached"}, "peft": {"lm_target_modules": ["q_proj"]}},
            "model.mode=cached freezes the LM",
        ),
        ({"eval": {"metric": "ndcg@15"}}, r"K=15 is not in eval.ks"),
        (
            {"data": {"domains": [{"name": "u", "interactions": "x.csv", "format": "csv"}]}},
            "user data needs `items`",
        ),
        (
            {
                "data": {
                    "domains": [
                        {
                            "name": "u",
                            "interactions": "x",
                            "items": "y",
                            "text_fields": ["t"],
                            "template": "{title}",
                        }
                    ]
                }
            },
            r"uses \['title'\], which are not in",
        ),
        (
            {"peft": {"method": "adalora", "adalora": {"init_r": 4, "target_r": 8}}},
            "only prunes rank",
        ),
        ({"data": {"resampled": True}}, "needs data.epoch_batches"),
    ],
)
def test_contradictions_are_rejected_with_a_fix(tree, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tree)


def test_missing_file_path_is_rejected(tmp_path):
    cfg = config_from_dict(
        {
            "data": {
                "domains": [
                    {
                        "name": "u",
                        "interactions": "nope.csv",
                        "items": "items.csv",
                        "format": "csv",
                        "text_fields": ["t"],
                        "template": "{t}",
                    }
                ]
            },
            "stages": {
                "pretrain": {"enabled": False},
                "zero_shot": False,
                "adapt": {"enabled": False},
                "baselines": [],
            },
        }
    )
    with pytest.raises(ConfigError, match=r"interactions='nope.csv': no such file"):
        check_environment(cfg, tmp_path)


def test_missing_model_folder_says_where_it_looked(tmp_path):
    cfg = config_from_dict({"model": {"item_encoder": "./models/none"}})
    with pytest.raises(
        ConfigError, match=r"no HF checkpoint there \(looked for .*models/none/config.json"
    ):
        check_environment(cfg, tmp_path)


def test_zero3_with_a_plain_cpu_launcher_is_impossible(tmp_path):
    launcher = tmp_path / "cpu.yaml"
    launcher.write_text("distributed_type: MULTI_CPU\nnum_processes: 2\n")
    cfg = config_from_dict({"distributed": {"strategy": "zero3", "launcher": str(launcher)}})
    with pytest.raises(
        ConfigError, match=r"strategy='zero3' but .* provides 'ddp', which cannot run it"
    ):
        check_launcher(cfg, Path("/"))


def test_yaml_floats_without_a_dot_parse(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 3e-4\n")
    assert load_config(f).train.lr == pytest.approx(3e-4)


def test_non_mapping_yaml_is_rejected(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(f)


def test_shard_url_needs_the_shard_placeholder():
    with pytest.raises(ConfigError, match=r"data\.shard_url="):
        config_from_dict({"data": {"shard_url": "s3://bucket/prepared/"}})
    assert config_from_dict(
        {"data": {"shard_url": "pipe:cat {root}/shards/{shard}"}}
    ).data.shard_url


def test_a_missing_launcher_file_is_named(tmp_path):
    cfg = config_from_dict({"distributed": {"launcher": "launch/nope.yaml"}})
    with pytest.raises(
        ConfigError, match=r"distributed.launcher='launch/nope.yaml': no such file; see launch/"
    ):
        check_launcher(cfg, tmp_path)
    assert check_environment(cfg, tmp_path) == []  # the disk checks leave the launcher alone


def test_every_launch_template_names_the_strategy_it_provides():
    from distrec.distributed.launcher import launcher_strategy

    assert launcher_strategy(ROOT / "launch" / "cpu_multiprocess.yaml") == "ddp"
    assert launcher_strategy(ROOT / "launch" / "zero3.yaml") == "zero3"
    assert launcher_strategy(ROOT / "launch" / "fsdp.yaml") == "fsdp"
