"""results.csv, best.yaml, sweep.png and the summary from trial records (no Ray needed)."""

import csv
import math
from pathlib import Path

import pytest

from distrec.config.load import config_from_dict, load_config
from distrec.tune.results import SweepFacts, TrialRecord, write_results
from distrec.tune.space import parse_space
from tests.conftest import tiny_run_config

METRIC = "valid.ndcg@10"


def history(*values):
    return [{"epoch": i + 1, METRIC: v, "loss": 1.0} for i, v in enumerate(values)]


@pytest.fixture
def sweep(tmp_path):
    stages = {"adapt": {"epochs": 4, "mode": "lora"}}  # auto would train two adapt models
    tree = tiny_run_config(Path("/data/synth"), tmp_path / "orig", stages=stages)
    tree["tune"] = {
        "stage": "adapt",
        "search_space": {
            "train.lr": {"loguniform": [1e-4, 1e-2]},
            "model.pooling": {"choice": ["mean", "cls"]},
        },
    }
    params = parse_space(tree["tune"]["search_space"])
    records = [
        TrialRecord("t_00000", "early_stopped", {"train.lr": 1e-4, "model.pooling": "cls"},
                    history(0.10), 3.0),
        TrialRecord("t_00001", "completed", {"train.lr": 3e-3, "model.pooling": "mean"},
                    history(0.12, 0.31, 0.29, 0.30), 9.0),
        TrialRecord("t_00002", "error", {"train.lr": 1e-2, "model.pooling": "mean"},
                    [], 1.0, error="RuntimeError: boom"),
        TrialRecord("t_00003", "completed", {"train.lr": 5e-4, "model.pooling": "cls"},
                    history(0.2, 0.25, float("nan"), 0.27), 8.0),
    ]  # fmt: skip
    sweep = SweepFacts(tmp_path, tree, params, config_from_dict(tree), threads=1)
    text = write_results(records, sweep, 42.0)
    return tmp_path, text


def test_results_csv_ranks_trials_with_the_promised_columns(sweep):
    out, _ = sweep
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert list(rows[0]) == [
        "trial_id",
        "status",
        "epochs",
        "best_valid_ndcg@10",
        "wall_s",
        "train.lr",
        "model.pooling",
    ]
    assert [r["trial_id"] for r in rows] == ["t_00001", "t_00003", "t_00000", "t_00002"]
    assert [r["status"] for r in rows] == ["completed", "completed", "early_stopped", "error"]
    assert rows[0]["best_valid_ndcg@10"] == "0.310000" and rows[0]["epochs"] == "4"
    assert rows[1]["best_valid_ndcg@10"] == "0.270000"  # the NaN epoch is not a best
    assert rows[3]["best_valid_ndcg@10"] == "" and rows[3]["epochs"] == "0"


def test_best_yaml_is_a_runnable_config_with_the_best_values(sweep):
    out, _ = sweep
    text = (out / "best.yaml").read_text()
    assert text.startswith("# Best trial t_00001") and "valid.ndcg@10 = 0.310000 (epoch 2)" in text
    cfg = load_config(out / "best.yaml")
    assert cfg.train.lr == 3e-3 and cfg.model.pooling == "mean"
    assert cfg.train.threads == 1
    assert cfg.tune.search_space == {}  # the sweep is not carried into the retraining run
    assert cfg.output.dir == str(out / "best-run")
    assert cfg.stages.adapt.epochs == 4  # the rest is the user's config unchanged


def test_summary_counts_statuses_and_names_failures(sweep):
    out, text = sweep
    assert "4 trials in 42s: 2 completed, 1 stopped early by the scheduler (asha), 1 failed" in text
    assert "| t_00001 | completed | 4 | 0.3100 |" in text
    assert "t_00002 failed: RuntimeError: boom" in text
    assert (out / "summary.md").read_text() == text


def test_sweep_png_is_drawn(sweep):
    out, _ = sweep
    assert (out / "sweep.png").stat().st_size > 20_000


def test_no_best_yaml_when_nothing_reported(tmp_path):
    tree = tiny_run_config(Path("/data/synth"), tmp_path / "o", stages={"adapt": {"mode": "lora"}})
    tree["tune"] = {"search_space": {"train.lr": {"choice": [1e-3]}}}
    params = parse_space(tree["tune"]["search_space"])
    records = [TrialRecord("t_0", "error", {"train.lr": 1e-3}, [], 0.5, error="x")]
    sweep = SweepFacts(tmp_path, tree, params, config_from_dict(tree), threads=1)
    text = write_results(records, sweep, 1.0)
    assert "no best.yaml" in text and not (tmp_path / "best.yaml").exists()
    assert math.isnan(records[0].best(METRIC, "max"))
