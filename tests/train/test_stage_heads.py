"""Stages train their own heads: pretraining model.heads, the target stages
stages.adapt.heads; a head a stage does not train is frozen there."""

from __future__ import annotations

import json

import yaml
from safetensors.torch import load_file

from distrec.train.entry import run_training
from tests.heads.test_quality import rated_config, rated_domains  # noqa: F401  (the fixture)


def test_adapt_can_train_a_head_that_pretraining_did_not(tmp_path, rated_domains):  # noqa: F811
    cfg = rated_config(
        rated_domains,
        tmp_path / "run",
        model={"heads": {"retrieval": 1.0}},
        stages={
            "pretrain": {"epochs": 1},
            "adapt": {"epochs": 2, "mode": "full", "heads": {"retrieval": 1.0, "rating": 1.0}},
            "baselines": ["id_target_only"],
            "id_baseline_epochs": 1,
        },
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert run_training(str(tmp_path / "c.yaml")) == 0
    stages = json.loads((tmp_path / "run" / "metrics.json").read_text())["stages"]
    assert "rmse" not in stages["pretrain"]["test"] and "rmse" not in stages["zero_shot"]["test"]
    assert "rmse" in stages["adapt"]["test"]
    assert "rmse" in stages["baseline_id_target_only"]["test"]  # baselines train the target's heads
    # Pretraining did not train the rating head: the base holds its initial weights, which
    # start at zero in the last layer (the head starts from its bias baseline) ...
    base = load_file(tmp_path / "run" / "export" / "base" / "model.safetensors")
    assert not base["heads.rating.net.2.weight"].any()
    # ... and adapting moved them.
    full = load_file(tmp_path / "run" / "export" / "rated-tgt-full" / "model.safetensors")
    assert full["heads.rating.net.2.weight"].abs().sum() > 0
