"""The README's "Extending distrec" recipes work: a new loss, a new stage and a new model,
each one file in tests/extensions/ plus its one registration line, change nothing in the core."""

import json

import pytest
import yaml

from distrec.config import ConfigError
from distrec.train.entry import run_training
from tests.conftest import tiny_run_config

SMALL = {"pretrain": {"epochs": 1}, "adapt": {"epochs": 1, "mode": "lora"}, "zero_shot": True}


def train(tmp_path, synth_dir, name: str, **sections) -> dict:
    cfg = tiny_run_config(synth_dir, tmp_path / name, **sections)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    assert run_training(str(tmp_path / f"{name}.yaml")) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())["stages"]


def test_a_registered_loss_trains_and_differs_from_the_built_in(synth_dir, tmp_path):
    import tests.extensions.bpr_loss  # noqa: F401  (registers the bpr head)

    stages = {**SMALL, "baselines": [], "zero_shot": False, "adapt": {"enabled": False}}
    bpr = train(tmp_path, synth_dir, "bpr", model={"heads": {"bpr": 1.0}}, stages=stages)
    softmax = train(tmp_path, synth_dir, "softmax", stages=stages)
    loss_bpr, loss_softmax = (s["pretrain"]["history"][0]["loss"] for s in (bpr, softmax))
    # -log sigmoid of a score gap starts near log 2; a softmax over 60 items near log 60.
    assert 0.0 < loss_bpr < 1.0 < loss_softmax
    assert bpr["pretrain"]["test"] != softmax["pretrain"]["test"]


def test_a_registered_stage_runs_when_named_in_stages_extra(synth_dir, tmp_path):
    import tests.extensions.recent_popularity  # noqa: F401  (registers the stage)

    stages = {**SMALL, "baselines": ["popularity"], "extra": ["recent_popularity"]}
    found = train(tmp_path, synth_dir, "extra", stages=stages)
    assert list(found)[-1] == "recent_popularity"  # after the built-ins
    record = found["recent_popularity"]
    assert record["domains"] == ["tiny-b"] and record["test"]["users"] > 0
    assert record["test"] != found["baseline_popularity"]["test"]  # its own ranking
    ranks = tmp_path / "extra" / "ranks" / "recent_popularity.parquet"
    assert ranks.exists()


def test_an_unregistered_stage_or_loss_is_a_clear_error(synth_dir, tmp_path):
    for name, sections, key in (
        ("nostage", {"stages": {"extra": ["nope"]}}, "stages.extra='nope'"),
        ("noloss", {"model": {"heads": {"nope": 1.0}}}, "model.heads='nope'"),
        ("noadapt", {"stages": {"adapt": {"heads": {"nope": 1.0}}}}, "stages.adapt.heads='nope'"),
        ("nomodel", {"model": {"architecture": "nope"}}, "model.architecture='nope'"),
    ):
        cfg = tiny_run_config(synth_dir, tmp_path / name, **sections)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(ConfigError, match=rf"{key}: no .* of that name; registered: \["):
            run_training(str(tmp_path / f"{name}.yaml"))
        assert not (tmp_path / name).exists()  # refused before anything was written


def test_a_registered_model_trains_adapts_and_declares_its_lora_targets(synth_dir, tmp_path):
    from safetensors.torch import load_file

    import tests.extensions.linear_text  # noqa: F401  (registers model.architecture)

    stages = {**SMALL, "baselines": []}
    found = train(
        tmp_path, synth_dir, "linear", model={"architecture": "linear_text"}, stages=stages
    )
    base = load_file(str(tmp_path / "linear" / "export" / "base" / "model.safetensors"))
    assert base["item_tower.proj.weight"].shape == (32, 384)  # one Linear, MiniLM -> dim
    assert not any("fc_in" in k or ".ids." in k for k in base)
    adapter = load_file(
        str(tmp_path / "linear" / "adapters" / "tiny-b" / "adapter_model.safetensors")
    )
    assert any("item_tower.proj.lora_A" in k for k in adapter)  # its own target, adapted
    assert found["adapt"]["test"]["users"] > 0
