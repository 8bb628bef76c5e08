"""Quality tests of the heads that can fail, on synthetic data with planted ratings.

The planted rating is round(3 + user bias + item bias + the user's taste for the item's
genre + noise) (`distrec.data.synth`): the item-mean baseline knows only the item's bias,
so a rating head that reads the user's history must beat it; the planted sequential rule
makes the next item predictable beyond popularity, so a CTR head must out-rank
popularity on the same fixed negatives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distrec.data.synth import SynthSpec, synth_domain
from distrec.train.entry import run_training
from tests.conftest import CACHE, tiny_run_config

HEADS = {"retrieval": 1.0, "rating": 1.0, "ctr": 1.0}


@pytest.fixture(scope="module")
def rated_domains() -> Path:
    out = CACHE / "synth-rated"
    common = dict(items=60, mean_length=14, min_length=4, zipf=0.6, rule=0.5, catalog_seed=21)
    synth_domain(
        SynthSpec(name="rated-src", users=600, seed=5, users_per_shard=100, ratings=True, **common),
        out,
    )
    synth_domain(
        SynthSpec(name="rated-tgt", users=300, seed=6, users_per_shard=50, ratings=True, **common),
        out,
    )
    return out


def rated_config(prepared: Path, out: Path, **sections) -> dict:
    """A tiny run config: rated-src -> rated-tgt, `sections` merged on top."""
    return tiny_run_config(
        prepared,
        out,
        data={
            "domains": [
                {"name": "rated-src", "format": "prepared"},
                {"name": "rated-tgt", "format": "prepared"},
            ],
            "sources": ["rated-src"],
            "target": "rated-tgt",
        },
        report_to=[],
        **sections,
    )


def run(tmp_path: Path, prepared: Path, name: str, **sections) -> dict:
    cfg = rated_config(prepared, tmp_path / name, **sections)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    assert run_training(str(tmp_path / f"{name}.yaml")) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())["stages"]


def test_rating_beats_item_mean_and_ctr_beats_popularity(tmp_path, rated_domains):
    stages = run(
        tmp_path,
        rated_domains,
        "target_only",
        model={"heads": HEADS},
        stages={
            "pretrain": {"enabled": False},
            "zero_shot": False,
            "adapt": {"enabled": False},
            "baselines": ["popularity", "rating_means", "id_target_only"],
            "id_baseline_epochs": 12,
            "id_baseline_lr": 3e-3,
        },
        eval={"metric": "rmse"},
        train={"early_stopping_patience": 3},
    )
    model, item_mean = stages["baseline_id_target_only"], stages["baseline_item_mean"]
    assert model["test"]["rmse"] < 0.97 * item_mean["test"]["rmse"], (
        model["test"],
        item_mean["test"],
    )
    assert item_mean["test"]["rmse"] < stages["baseline_global_mean"]["test"]["rmse"]
    popularity = stages["baseline_popularity"]["test"]
    assert model["test"]["auc"] > popularity["auc"] + 0.02, (model["test"]["auc"], popularity)
    # eval.metric=rmse is minimised: the kept epoch has the lowest validation RMSE
    history = model["history"]
    assert model["best_valid"] == min(h["valid"]["rmse"] for h in history)
    assert model["best_valid"] == model["valid"]["rmse"]


def test_joint_heads_transfer_and_write_per_user_results(tmp_path, rated_domains):
    """Pretraining on the source trains every head; the LoRA adapter carries its own copy
    of the head modules to the target; heads.parquet holds the per-user columns behind
    every record's head metrics."""
    import pandas as pd

    stages = run(
        tmp_path,
        rated_domains,
        "joint",
        model={"heads": HEADS},
        stages={
            "pretrain": {"epochs": 4},
            "adapt": {"epochs": 4, "mode": "lora"},
            "baselines": ["popularity", "rating_means"],
        },
    )
    heads = pd.read_parquet(tmp_path / "joint" / "heads.parquet")
    for stage in ("pretrain", "zero_shot", "adapt", "baseline_item_mean"):
        rows = heads[(heads["stage"] == stage) & (heads["split"] == "test")]
        rmse = ((rows["rating_pred"] - rows["rating"]) ** 2).mean() ** 0.5
        assert abs(rmse - stages[stage]["test"]["rmse"]) < 1e-9, stage
    popularity = heads[(heads["stage"] == "baseline_popularity") & (heads["split"] == "test")]
    assert abs(popularity["ctr_auc"].mean() - stages["baseline_popularity"]["test"]["gauc"]) < 1e-9
    adapted, zero_shot = stages["adapt"]["test"], stages["zero_shot"]["test"]
    assert adapted["rmse"] != zero_shot["rmse"]  # the adapter trained its own rating head
    assert adapted["rmse"] < stages["baseline_item_mean"]["test"]["rmse"]
    # `distrec evaluate` reloads the adapted model (base + adapter with its head copies)
    # and judges the heads on the same held-out pairs: the same numbers as the record.
    from distrec.train.inference import evaluate_run

    text = evaluate_run(str(tmp_path / "joint"), "rated-tgt", "test")
    found = dict(line.split() for line in text.splitlines()[1:])
    for key in ("rmse", "auc", "ndcg@10"):
        assert abs(float(found[key]) - adapted[key]) < 1e-4, (key, text)
