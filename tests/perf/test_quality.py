"""perf/quality.py over fabricated seed dirs (metrics.json + ranks.parquet) and peer dirs:
mean/std per stage, the ratios with intervals, the best peer, resuming; never trains."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from distrec.eval.metrics import metrics_from_ranks
from perf import quality

USERS = 200
# Typical rank of each stage's targets: lower is better. adapt is planted well ahead of the
# target-only baselines; zero-shot and popularity draw from the same distribution.
SCALE = {
    "adapt": 4.0,
    "zero_shot": 30.0,
    "baseline_popularity": 30.0,
    "baseline_id_target_only": 25.0,
    "baseline_text_target_only": 20.0,
}


def fabricate_ranks(stages: dict[str, float], seed: int, domain: str = "ml-100k"):
    rng = np.random.default_rng(seed)
    rows = []
    for stage, scale in stages.items():
        for split in ("valid", "test"):
            rank = np.floor(rng.exponential(scale, USERS) * 2) / 2
            rows.append(
                pd.DataFrame(
                    {"stage": stage, "split": split, "user": np.arange(USERS), "domain": domain}
                ).assign(rank=rank)
            )
    return pd.concat(rows, ignore_index=True)


def write_run(run_dir, ranks: pd.DataFrame, stages=None, wall_s=100.0) -> None:
    """A run dir whose metrics.json agrees with its ranks.parquet, as distrec writes them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ranks.to_parquet(run_dir / "ranks.parquet")
    out: dict = {}
    for stage in stages or ranks["stage"].unique():
        for split in ("valid", "test"):
            rows = ranks[(ranks["stage"] == stage) & (ranks["split"] == split)]
            out.setdefault(stage, {})[split] = metrics_from_ranks(
                torch.tensor(rows["rank"].to_numpy()), [10, 20]
            )
    (run_dir / "metrics.json").write_text(
        json.dumps({"stages": out, "config": {"seed": 0}, "wall_s": wall_s})
    )


@pytest.fixture
def runs(tmp_path):
    out = tmp_path / "quality"
    for s in range(3):
        write_run(out / f"seed-{s}", fabricate_ranks(SCALE, seed=s), wall_s=100.0 + s)
    peers = tmp_path / "peers"
    write_run(peers / "sasrec", fabricate_ranks({"recbole_sasrec": 10.0}, seed=10))
    write_run(peers / "bpr", fabricate_ranks({"recbole_bpr": 40.0}, seed=11))
    return out, peers


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything launches distrec.train (git and the like still run)."""
    real = subprocess.run

    def guarded(cmd, *args, **kwargs):
        assert "distrec.train" not in cmd, f"training launched: {cmd}"
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(quality.subprocess, "run", guarded)


def test_aggregate_stages_ratios_and_best_peer(runs):
    out, peers = runs
    result = quality.aggregate(out, peers=peers)
    assert result["seeds"] == [0, 1, 2]
    assert [r["wall_s"] for r in result["runs"]] == [100.0, 101.0, 102.0]
    adapt = result["stages"]["adapt"]["test/ndcg@10"]
    per_seed = [
        json.loads((out / f"seed-{s}" / "metrics.json").read_text())["stages"]["adapt"]["test"][
            "ndcg@10"
        ]
        for s in range(3)
    ]
    assert adapt["values"] == per_seed
    assert adapt["mean"] == pytest.approx(np.mean(per_seed))
    assert adapt["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert set(result["stages"]["baseline_popularity"]) == {
        "test/ndcg@10",
        "test/recall@10",
        "test/mrr@10",
        "valid/ndcg@10",
    }

    assert result["peer"]["name"] == "recbole_sasrec"
    assert {c["name"] for c in result["peer"]["candidates"]} == {"recbole_sasrec", "recbole_bpr"}

    ratios = {(r["name"], r["split"]): r for r in result["ratios"]}
    assert set(ratios) == {
        ("adapt / baseline_id_target_only", "test"),
        ("adapt / baseline_text_target_only", "test"),
        ("adapt / recbole_sasrec", "test"),
        ("baseline_id_target_only / recbole_sasrec", "test"),
        ("zero_shot / baseline_popularity", "valid"),
        ("zero_shot / baseline_popularity", "test"),
    }
    for r in ratios.values():
        assert (r["n_users"], r["n_seeds"]) == (USERS, 3)
        assert r["low"] <= r["ratio"] <= r["high"]
    assert ratios[("adapt / baseline_id_target_only", "test")]["low"] > 1
    assert ratios[("adapt / recbole_sasrec", "test")]["excludes_one"]
    # the pooled ratio is the ratio of the seed-mean NDCG@10s (equal users per seed)
    id_mean = result["stages"]["baseline_id_target_only"]["test/ndcg@10"]["mean"]
    assert ratios[("adapt / baseline_id_target_only", "test")]["ratio"] == pytest.approx(
        adapt["mean"] / id_mean
    )


def test_outputs_markdown_has_the_intervals(runs, no_training):
    out, peers = runs
    assert quality.main(["--out", str(out), "--aggregate-only", "--peers", str(peers)]) == 0
    result = json.loads((out / "quality.json").read_text())
    assert result["aggregate_only"] and "versions" in result and "machine" in result
    md = (out / "quality.md").read_text()
    for r in result["ratios"]:
        assert f"| {r['name']} | {r['split']} | {r['ratio']:.3f}x | [{r['low']:.3f}, " in md
    assert "adapted (source -> target; stages.adapt.mode) | 0." in md and " ± " in md
    assert "peer recbole_sasrec (1 run, best of 2)" in md
    assert (out / "quality.png").stat().st_size > 0


def test_stage_not_run_is_skipped_and_named(tmp_path):
    out = tmp_path / "q"
    without_text = {k: v for k, v in SCALE.items() if k != "baseline_text_target_only"}
    write_run(out / "seed-0", fabricate_ranks(without_text, seed=0))
    result = quality.aggregate(out)
    skipped = {r["name"]: r["skipped"] for r in result["ratios"] if "skipped" in r}
    assert skipped == {
        "adapt / baseline_text_target_only": "not run: baseline_text_target_only",
        "adapt / best peer": "not run: --peers",
        "baseline_id_target_only / best peer": "not run: --peers",
    }
    assert result["stages"]["adapt"]["test/ndcg@10"]["std"] is None  # one seed: no spread
    md = quality.markdown(result)
    assert "Not computed: adapt / baseline_text_target_only on test" in md


def test_stage_in_metrics_but_not_in_ranks_names_the_file(tmp_path):
    out = tmp_path / "q"
    ranks = fabricate_ranks(SCALE, seed=0)
    write_run(out / "seed-0", ranks)
    ranks[ranks["stage"] != "zero_shot"].to_parquet(out / "seed-0" / "ranks.parquet")
    with pytest.raises(KeyError, match=r"seed-0/ranks\.parquet: no ranks for stage 'zero_shot'"):
        quality.aggregate(out)


def test_missing_seed_dir_is_an_error(runs):
    out, _ = runs
    with pytest.raises(FileNotFoundError, match="seed-3"):
        quality.aggregate(out, seeds=4)


def test_resume_trains_only_unfinished_seeds(tmp_path, monkeypatch):
    out = tmp_path / "q"
    for s in range(2):
        write_run(out / f"seed-{s}", fabricate_ranks(SCALE, seed=s))
    launched, real = [], subprocess.run

    def fake_run(cmd, *args, **kwargs):
        if "distrec.train" not in cmd:
            return real(cmd, *args, **kwargs)  # git, for quality.json's commit
        launched.append((cmd, kwargs["env"]))
        write_run(out / "seed-2", fabricate_ranks(SCALE, seed=2))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(quality, "prepare_data", lambda config, overrides: None)
    monkeypatch.setattr(quality.subprocess, "run", fake_run)
    quality.train_seeds("configs/demo.yaml", 3, out, ["train.lr=1e-3"], processes=2)
    ((cmd, env),) = launched
    assert cmd[:7] == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "launch/cpu_multiprocess.yaml",
        "--num_processes",
        "2",
    ]
    assert cmd[7:] == [
        "-m",
        "distrec.train",
        "--config",
        "configs/demo.yaml",
        "seed=2",
        f"output.dir={out / 'seed-2'}",
        "train.lr=1e-3",
    ]
    assert env["ACCELERATE_USE_CPU"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["OMP_NUM_THREADS"] == "1"
    launch = json.loads((out / "seed-2" / "launch.json").read_text())
    assert launch["command"] == cmd and launch["returncode"] == 0
    assert quality.aggregate(out)["runs"][2]["command"] == cmd
    # re-aggregating recovers how the seeds were launched
    assert quality.main(["--out", str(out), "--aggregate-only"]) == 0 and len(launched) == 1
    result = json.loads((out / "quality.json").read_text())
    assert (result["config"], result["overrides"], result["processes"]) == (
        "configs/demo.yaml",
        ["train.lr=1e-3"],
        2,
    )


def test_failed_seed_stops_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "prepare_data", lambda config, overrides: None)
    monkeypatch.setattr(
        quality.subprocess, "run", lambda cmd, env, check: subprocess.CompletedProcess(cmd, 3)
    )
    with pytest.raises(RuntimeError, match=r"seed 0: training exited with 3.*rerun"):
        quality.train_seeds("configs/demo.yaml", 2, tmp_path / "q", [], processes=2)


def test_single_process_runs_distrec_train_directly_and_reserved_overrides_refused(tmp_path):
    cmd, _ = quality.train_command("c.yaml", 1, tmp_path, [], processes=1)
    assert cmd[:3] == [sys.executable, "-m", "distrec.train"]
    with pytest.raises(ValueError, match=r"output\.dir=x"):
        quality.train_command("c.yaml", 1, tmp_path, ["output.dir=x"], processes=2)
