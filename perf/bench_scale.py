"""Cost curves at scale, on synthetic domains whose items carry generated feature vectors
(`distrec data synth --feature-dim`): these measure the system, not the LM.

    python perf/bench_scale.py train  --out perf/results/scale   # step time/memory vs catalog
    python perf/bench_scale.py eval   --out perf/results/scale   # users/s, per-rank memory
    python perf/bench_scale.py infer  --out perf/results/scale   # batch inference 1e5 x 1e5
    python perf/bench_scale.py prep   --out perf/results/scale   # perf/scale_prep.py's curves
    python perf/bench_scale.py report --out perf/results/scale   # scale.json/.md/.png, fits
    python perf/bench_scale.py all    --out perf/results/scale

Training: the product's Trainer step (cached mode, text-only item tower over the generated
features) at 10^3 .. 10^6 items, full vs sampled softmax; the median and the fastest window
of per-step times after warm-up, and the process's sampled peak RSS. Evaluation: the
product's Evaluator on 1 process (replicated catalog) and on 2 launched ranks (sharded
catalog), users/s and each rank's peak RSS, and whether the metrics are identical. Growth
exponents are least-squares slopes of log(cost) on log(items).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from perf.common import PeakMemory, load_average, write_result  # noqa: E402
from perf.scale_report import fits, load_parts, markdown, plot  # noqa: E402

TRAIN_SIZES = (1_000, 10_000, 100_000, 1_000_000)
EVAL_SIZES = (10_000, 100_000, 1_000_000)
FEATURE_DIM = 64
USERS = 2_000
LAUNCH_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}


def synth(work: Path, items: int, users: int = USERS, mean_length: float = 20.0) -> str:
    """A synthetic domain of `items` items with generated features; returns its name."""
    from distrec.data.synth import SynthSpec, synth_domain

    name = f"s{items}-u{users}"
    spec = SynthSpec(
        name=name,
        users=users,
        items=items,
        mean_length=mean_length,
        min_length=3,
        zipf=0.9,
        rule=0.5,
        seed=1,
        users_per_shard=max(500, users // 20),
        feature_dim=FEATURE_DIM,
    )
    synth_domain(spec, work / "data")
    return name


def run_config(work: Path, name: str, out: Path, **train) -> Path:
    """A run over domain `name` alone: cached mode, the text-only tower on its features."""
    import yaml

    cfg = {
        "seed": 0,
        "cache_dir": str(work / "cache"),
        "data": {
            "prepared_dir": str(work / "data"),
            "domains": [{"name": name, "format": "prepared"}],
            "sources": [name],
            "max_history": 20,
            "num_workers": 0,
        },
        "model": {"dim": 64, "item_id_embeddings": False, "user_tower": {"layers": 1, "heads": 2}},
        "stages": {"zero_shot": False, "adapt": {"enabled": False}, "baselines": []},
        "train": {"batch_size": 16, "precision": "fp32", "report_to": [], **train},
        # Blocks of 4,096 rows: 10^4 items already split into 3 (2 ranks own a share each).
        "eval": {"batch_size": 128, "max_users": 512, "ks": [10], "catalog_block": 4096},
        "output": {"dir": str(out)},
    }
    path = out.parent / f"{out.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


# --- training step vs catalog size ------------------------------------------------------


def train_point(work: Path, items: int, loss: str, steps: int, warmup: int) -> dict:
    """The product's step on a catalog of `items`: per-step seconds and peak RSS."""
    from distrec.config import load_config
    from distrec.train.stages.pipeline import new_model
    from distrec.train.trainer import StagePlan, TrainHook
    from perf.bench_train import prepared_trainer
    from perf.common import build_run

    name = synth(work, items)
    out = work / "runs" / f"train-{items}-{loss}"
    cfg = load_config(run_config(work, name, out, loss=loss, num_negatives=1024))
    ws = build_run(cfg, out, [name])
    model = new_model(ws)
    plan = StagePlan("scale", {name: 1.0}, [name], epochs=1, lr=1e-3)

    class Clock(TrainHook):
        def __init__(self) -> None:
            self.marks = [time.perf_counter()]

        def on_step(self, trainer, step):
            self.marks.append(time.perf_counter())

    clock = Clock()
    trainer = prepared_trainer(ws, model, plan, warmup + steps, [clock])
    with PeakMemory() as mem:
        trainer.train_epoch()
    times = np.diff(clock.marks)[warmup:]
    return {
        "items": items,
        "loss": loss,
        "steps": len(times),
        "step_s_median": float(np.median(times)),
        "step_s_fastest": float(times.min()),
        "peak_rss_mib": mem.report()["peak_bytes"] / 2**20,
        "load_average": load_average(),
    }


# A full-softmax step over 10^6 items takes ~1-2 min on 2 cores: fewer steps there.
BIG_FULL = 1_000_000
BIG_FULL_STEPS = (3, 1)  # measured, warm-up


def bench_train(work: Path, sizes, steps: int, warmup: int) -> list[dict]:
    rows = []
    for items in sizes:
        for loss in ("full", "sampled"):
            n, w = BIG_FULL_STEPS if loss == "full" and items >= BIG_FULL else (steps, warmup)
            # Each point in a fresh process: peak RSS is per process and cannot be reset.
            rows.append(in_subprocess("train-point", work, items, loss, n, w))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def in_subprocess(kind: str, work: Path, *args) -> dict:
    """`kind` with `args` in a fresh process; a point already measured in `work` is reused
    (an interrupted curve resumes)."""
    result = work / f"{kind}-{'-'.join(map(str, args))}.json"
    if result.exists():
        return json.loads(result.read_text())
    cmd = [sys.executable, __file__, kind, *map(str, args)]
    cmd += ["--work", str(work), "--result", str(result)]
    env = {**os.environ, **LAUNCH_ENV}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return json.loads(result.read_text())


# --- evaluation vs catalog size, 1 process vs 2 ranks -----------------------------------


def eval_worker(work: Path, items: int, catalog: str, result: Path) -> None:
    """Evaluate an untrained model (cost does not depend on the weights) on `items`; every
    rank writes its users/s, peak RSS and the metrics."""
    from distrec.config import load_config
    from distrec.train.evaluation import Evaluator, domain_metrics
    from distrec.train.stages.pipeline import new_model
    from perf.common import build_run

    name = synth(work, items)
    out = work / "runs" / f"eval-{items}"
    overrides = [f"eval.catalog={catalog}"]
    cfg = load_config(run_config(work, name, out), overrides)
    ws = build_run(cfg, out, [name])
    model = new_model(ws).eval()
    ev = Evaluator(ws)
    d = ws.domains[name]
    shard = ws.shard()
    with PeakMemory() as mem:
        start = time.perf_counter()
        found, _ = ev.evaluate(model, d, "test", lists=True)
        seconds = time.perf_counter() - start
    metrics = domain_metrics(found, d, cfg.eval.ks)
    record = {
        "items": items,
        "catalog": catalog,
        "world": shard.world,
        "rank": shard.rank,
        "users": int(metrics["users"]),
        "seconds": seconds,
        "users_per_s": metrics["users"] / seconds,
        "peak_rss_mib": mem.report()["peak_bytes"] / 2**20,
        "start_rss_mib": mem.report()["start_bytes"] / 2**20,
        "metrics": metrics,
    }
    path = result.with_name(f"{result.stem}-rank{shard.rank}.json")
    path.write_text(json.dumps(record, indent=2))


def eval_point(work: Path, items: int, ranks: int, port: int) -> dict:
    """1 process (replicated) or `ranks` launched ranks (sharded) on `items`."""
    catalog = "replicated" if ranks == 1 else "sharded"
    result = work / f"eval-{items}-{ranks}.json"
    worker = [__file__, "eval-worker", str(items), catalog]
    worker += ["--work", str(work), "--result", str(result)]
    if ranks == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
        cmd += ["launch/cpu_multiprocess.yaml", "--main_process_port", str(port)]
        cmd += ["--num_processes", str(ranks), *worker]
    synth(work, items)  # once, before the ranks start (they would race to write it)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **LAUNCH_ENV})
    per_rank = [
        json.loads(result.with_name(f"{result.stem}-rank{r}.json").read_text())
        for r in range(ranks)
    ]
    return {
        "items": items,
        "ranks": ranks,
        "catalog": catalog,
        "users": per_rank[0]["users"],
        "users_per_s": min(r["users_per_s"] for r in per_rank),
        "peak_rss_mib_per_rank": [r["peak_rss_mib"] for r in per_rank],
        "metrics": per_rank[0]["metrics"],
        "ranks_agree": all(r["metrics"] == per_rank[0]["metrics"] for r in per_rank),
    }


def bench_eval(work: Path, sizes) -> list[dict]:
    rows = []
    for i, items in enumerate(sizes):
        one = eval_point(work, items, 1, 0)
        two = eval_point(work, items, 2, 29711 + i)
        two["metrics_equal_one_process"] = two["metrics"] == one["metrics"]
        two["peak_ratio_to_one_process"] = max(two["peak_rss_mib_per_rank"]) / max(
            one["peak_rss_mib_per_rank"]
        )
        rows += [one, two]
        print(json.dumps([one, two]), flush=True)
    return rows


# --- batch inference --------------------------------------------------------------------


def bench_infer(work: Path, users: int, items: int, sample: int) -> dict:
    """Train briefly on a users x items domain, recommend for every user on 2 ranks, and
    compare the top-10 of `sample` users with `distrec recommend`."""
    import pandas as pd

    from distrec.train.inference import recommend

    name = synth(work, items, users=users, mean_length=12.0)
    out = work / "runs" / f"infer-{users}-{items}"
    cfg = run_config(work, name, out, loss="sampled", max_steps=30)
    env = {**os.environ, **LAUNCH_ENV}
    if not (out / "metrics.json").exists():
        train = [sys.executable, "-m", "distrec.train", "--config", str(cfg)]
        subprocess.run(
            [*train, "stages.pretrain.epochs=1"],
            check=True,
            cwd=ROOT,
            env=env,
        )
    recs = work / f"recs-{users}-{items}.parquet"
    recs.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    cmd += ["launch/cpu_multiprocess.yaml", "--main_process_port", "29721", "--num_processes", "2"]
    cmd += ["-m", "distrec.cli", "recommend", "--run", str(out), "--domain", name]
    cmd += ["--all-users", "--out", str(recs), "-k", "10"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    table = pd.read_parquet(recs)
    from distrec.data.manifest import load_manifest
    from distrec.data.shards import read_shard

    manifest = load_manifest(work / "data" / name / "manifest.json")
    first = read_shard(manifest.shard_urls()[0])
    agree = 0
    picked = first[:: max(1, len(first) // sample)][:sample]
    for seq in picked:
        history = [f"item-{i - 1}" for i in seq["items"]]
        text = recommend(str(out), name, history, k=10)
        expected = re.findall(r"^\s*\d+\. (\S+)", text, flags=re.M)
        got = table[table["user"] == seq["user"]].sort_values("rank")["item"].tolist()
        agree += got == expected
    return {
        "users": users,
        "items": items,
        "ranks": 2,
        "seconds_with_start_up": seconds,
        "users_per_s": users / seconds,
        "rows": len(table),
        "users_written": int(table["user"].nunique()),
        "sampled_users": len(picked),
        "sampled_users_equal_to_recommend": agree,
    }


# --- CLI ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "what",
        choices=["train", "eval", "infer", "prep", "report", "all", "train-point", "eval-worker"],
    )
    p.add_argument("args", nargs="*")
    p.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "scale")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-scale")
    p.add_argument("--result", type=Path, default=None)
    p.add_argument("--train-sizes", type=int, nargs="+", default=list(TRAIN_SIZES))
    p.add_argument("--eval-sizes", type=int, nargs="+", default=list(EVAL_SIZES))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--infer-users", type=int, default=100_000)
    p.add_argument("--infer-items", type=int, default=100_000)
    p.add_argument("--prep-sizes", type=float, nargs="+", default=[1e5, 1e6, 1e7])
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.what == "train-point":
        items, loss, steps, warmup = int(a.args[0]), a.args[1], int(a.args[2]), int(a.args[3])
        a.result.write_text(json.dumps(train_point(a.work, items, loss, steps, warmup)))
        return 0
    if a.what == "eval-worker":
        eval_worker(a.work, int(a.args[0]), a.args[1], a.result)
        return 0
    todo = ["train", "eval", "infer", "prep"] if a.what == "all" else [a.what]
    for part in todo:
        if part == "train":
            rows = bench_train(a.work, a.train_sizes, a.steps, a.warmup)
        elif part == "eval":
            rows = bench_eval(a.work, a.eval_sizes)
        elif part == "infer":
            rows = [bench_infer(a.work, a.infer_users, a.infer_items, sample=8)]
        elif part == "prep":  # perf/scale_prep.py writes prep.json (runs + goals) itself
            from perf.scale_prep import main as prep_main

            sizes = [str(s) for s in a.prep_sizes]
            out = str(a.out / "prep.json")
            prep_main(["--sizes", *sizes, "--workdir", str(a.work / "prep"), "--out", out])
            continue
        else:
            continue
        write_result(a.out / f"{part}.json", {"rows": rows})
    result = load_parts(a.out)
    result["fits"] = fits(result)
    write_result(a.out / "scale.json", result)
    (a.out / "scale.md").write_text(markdown(result))
    if result.get("train") or result.get("eval"):
        plot(result, a.out / "scale.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
