"""perf/transfer.py aggregates the variants' seed runs into ratios with paired intervals
that agree with the runs' own records."""

from __future__ import annotations

import json
import math

import yaml

from distrec.train.entry import run_training
from tests.conftest import tiny_run_config

KG = {"genre": "genre"}
DOMAINS = [
    {"name": "tiny", "format": "prepared", "kg_fields": KG},
    {"name": "tiny-b", "format": "prepared", "kg_fields": KG},
]
ZERO_SHOT = {"pretrain": {"epochs": 1}, "adapt": {"enabled": False}, "baselines": []}
ADAPT = {"pretrain": {"epochs": 1}, "adapt": {"epochs": 1}, "baselines": []}


def seed_run(synth_dir, out, **sections) -> None:
    cfg = tiny_run_config(synth_dir, out, report_to=[], **sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.parent.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_training(str(path)) == 0


def test_transfer_report_agrees_with_the_runs(tmp_path, synth_dir):
    from perf.transfer import main

    runs = tmp_path / "runs"
    adversarial = {"domain_adversarial": {"weight": 0.5}}
    seed_run(synth_dir, runs / "adversarial" / "seed-0", model=adversarial, stages=ZERO_SHOT)
    seed_run(synth_dir, runs / "unaligned" / "seed-0", stages=ZERO_SHOT)
    distill = {"enabled": True, "epochs": 1, "student": {"dim": 16}}
    seed_run(
        synth_dir,
        runs / "kg_distill" / "seed-0",
        model={"kg": {"aggregate": "mean"}},
        data={"domains": DOMAINS},
        stages={**ADAPT, "distill": distill},
    )
    seed_run(synth_dir, tmp_path / "demo" / "seed-0", stages=ADAPT)
    assert main(["serving", "--runs", str(runs), "--repeats", "2"]) == 0
    out = tmp_path / "report"
    args = ["report", "--runs", str(runs), "--baseline", str(tmp_path / "demo")]
    assert main([*args, "--out", str(out), "--n-boot", "200"]) == 0
    result = json.loads((out / "transfer.json").read_text())
    kg = json.loads((runs / "kg_distill" / "seed-0" / "metrics.json").read_text())["stages"]
    ratio = {r["name"]: r for r in result["distillation"]["ratios"]}
    got = ratio["NDCG@10 distill (kg_distill) / adapt (kg_distill)"]
    want = kg["distill"]["test"]["ndcg@10"] / kg["adapt"]["test"]["ndcg@10"]
    assert math.isclose(got["ratio"], want, rel_tol=1e-9) and got["low"] <= want <= got["high"]
    serving = result["distillation"]["serving"]
    assert serving["distill"]["params"] == kg["distill"]["student"]["params"]
    bench = result["serving_benchmark"]
    assert bench["repeats"] == 2 and bench["distill"]["speedup"]["mean"] > 0
    aligned = json.loads((runs / "adversarial" / "seed-0" / "metrics.json").read_text())["stages"]
    probe = result["alignment"]["probe_aligned"]["mean"]
    assert probe == aligned["pretrain"]["domain_probe"]["accuracy"]
    assert len(result["alignment"]["critic_accuracy_per_epoch"]) == 1
    names = [r["name"] for r in result["knowledge_graph"]["ratios"]]
    assert "NDCG@10 adapt (kg_distill) / adapt (demo)" in names
    assert (out / "transfer.md").exists() and (out / "transfer.png").exists()
    assert (out / "kg_distill" / "seed-0" / "ranks.parquet").exists()
