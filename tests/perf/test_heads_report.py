"""perf/heads.py aggregates seed runs of the joint-heads and retrieval-only configs into
ratios with paired bootstrap intervals that agree with the runs' own records."""

from __future__ import annotations

import json
import math

import yaml

from distrec.train.entry import run_training
from tests.heads.test_quality import rated_config, rated_domains  # noqa: F401  (the fixture)


def tiny_seed(prepared, out, heads: dict, baselines: list[str]) -> None:
    cfg = rated_config(
        prepared,
        out,
        model={"heads": heads},
        stages={
            "pretrain": {"epochs": 1},
            "adapt": {"epochs": 1},
            "baselines": baselines,
            "id_baseline_epochs": 1,
            "text_baseline_epochs": 1,
        },
    )
    path = out.parent.parent / f"{out.parent.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_training(str(path)) == 0


def test_heads_report_agrees_with_the_runs(tmp_path, rated_domains):  # noqa: F811
    from perf.heads import main

    trained = ["popularity", "id_target_only", "text_target_only"]
    tiny_seed(
        rated_domains,
        tmp_path / "joint" / "seed-0",
        {"retrieval": 1.0, "rating": 0.2, "ctr": 0.2},
        [*trained, "rating_means"],
    )
    tiny_seed(rated_domains, tmp_path / "retrieval" / "seed-0", {"retrieval": 1.0}, trained)
    out = tmp_path / "report"
    args = ["--joint", str(tmp_path / "joint"), "--retrieval", str(tmp_path / "retrieval")]
    assert main([*args, "--out", str(out), "--n-boot", "200"]) == 0
    result = json.loads((out / "heads.json").read_text())
    stages = json.loads((tmp_path / "joint" / "seed-0" / "metrics.json").read_text())["stages"]
    ratio = {r["name"]: r for r in result["ratios"]}
    rmse = ratio["RMSE adapt / baseline_item_mean"]
    want = stages["adapt"]["test"]["rmse"] / stages["baseline_item_mean"]["test"]["rmse"]
    assert math.isclose(rmse["ratio"], want, rel_tol=1e-9) and rmse["low"] <= want <= rmse["high"]
    gauc = ratio["GAUC adapt / baseline_popularity"]
    want = stages["adapt"]["test"]["gauc"] / stages["baseline_popularity"]["test"]["gauc"]
    assert math.isclose(gauc["ratio"], want, rel_tol=1e-9)
    assert "NDCG@10 adapt: joint / retrieval alone" in ratio
    assert (out / "heads.md").exists() and (out / "heads.png").exists()
    assert (out / "joint" / "seed-0" / "heads.parquet").exists()
