"""The tune demo, measured: run `distrec tune` on configs/tune/demo.yaml, retrain the
best trial from best.yaml with `distrec train`, and record what the issue asks for
(trials, how many ASHA stopped early, wall time, retrain vs. trial validation NDCG@10).

    python perf/tune_demo.py --out perf/results/tune_demo [--sweep runs/tune-demo-perf]

Writes results.csv, sweep.png, summary.md, best.yaml and tune_demo.json into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from perf.common import write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/tune/demo.yaml"


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start


def trial_best(sweep: Path, trial_id: str, metric: str) -> float:
    """The trial's best value at full precision, from Ray's per-trial result.json."""
    (result,) = sweep.glob(f"trials/run_trial_{trial_id}_*/result.json")
    values = [json.loads(line)[metric] for line in result.read_text().splitlines() if line]
    return max(values)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="perf/results/tune_demo")
    p.add_argument("--sweep", default="runs/tune-demo-perf")
    args = p.parse_args()
    sweep, out = ROOT / args.sweep, ROOT / args.out
    if sweep.exists():
        raise SystemExit(f"{sweep} exists; pass another --sweep (nothing is overwritten)")
    load_before = os.getloadavg()
    tune_s = run(
        [sys.executable, "-m", "distrec.cli", "tune", "--config", CONFIG, "--out", str(sweep)]
    )
    load_after = os.getloadavg()
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    best = rows[0]
    retrain_s = run(
        [sys.executable, "-m", "distrec.cli", "train", "--config", str(sweep / "best.yaml")]
    )
    metrics = json.loads((sweep / "best-run" / "metrics.json").read_text())
    retrained = metrics["stages"]["baseline_text_target_only"]["valid"]["ndcg@10"]
    trial = trial_best(sweep, best["trial_id"], "valid.ndcg@10")
    statuses = [r["status"] for r in rows]
    result = {
        "config": CONFIG,
        "trials": len(rows),
        "completed": statuses.count("completed"),
        "early_stopped": statuses.count("early_stopped"),
        "error": statuses.count("error"),
        "early_stopped_fraction": statuses.count("early_stopped") / len(rows),
        "tune_wall_s": tune_s,
        "best_trial": best["trial_id"],
        "best_trial_valid_ndcg@10": trial,
        "retrained_valid_ndcg@10": retrained,
        "retrain_abs_diff": abs(retrained - trial),
        "retrain_wall_s": retrain_s,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", "sweep.png", "summary.md", "best.yaml"):
        shutil.copy(sweep / name, out / name)
    write_result(out / "tune_demo.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
