"""A chaos run: one 2-process training killed N times at random steps (a random rank, SIGKILL
or SIGTERM), resumed each time with `--resume auto`, compared with the same training left
alone. Writes perf/results/chaos/chaos.json:

- `identical_metrics`: the final metrics.json (every stage's valid/test metrics and loss
  history) equals the uninterrupted run's;
- `samples`: from a line per finished batch and rank (perf/chaos_train.py), the stream the
  interrupted run trained on in the end (the last time each batch was done) against the
  uninterrupted one: batches lost, repeated (done twice with different users) or extra;
- `wasted`: per kill, the batches done after the checkpoint the next attempt resumed from
  (redone work), against train.checkpoint_every_steps.

    python -m perf.chaos --kills 5 --seed 0

The training is the demo's shape (cached MiniLM features, ML-100K-sized synthetic source and
target, pretrain then LoRA/full adaptation with early stopping off) under DDP on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from distrec.data.synth import SynthSpec, synth_domain
from distrec.utils.progress import log
from perf.common import rank_pids

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results" / "chaos"
CHECKPOINT_EVERY = 5
# ML-100K's size (943 users, 1,682 items, ~106 interactions per user), shorter histories.
SOURCE = SynthSpec(name="chaos-src", users=943, items=1682, mean_length=40, rule=0.3, seed=11)
TARGET = SynthSpec(name="chaos-tgt", users=600, items=1200, mean_length=30, rule=0.3, seed=12)


def run_config(data: Path, out: Path) -> dict:
    """The demo's recipe, scaled to finish in minutes on 2 CPU cores."""
    return {
        "seed": 0,
        "cache_dir": str(data.parent / "features"),
        "data": {
            "prepared_dir": str(data),
            "domains": [
                {"name": SOURCE.name, "format": "prepared"},
                {"name": TARGET.name, "format": "prepared"},
            ],
            "sources": [SOURCE.name],
            "target": TARGET.name,
            "max_history": 20,
            "num_workers": 1,
        },
        "model": {"mode": "cached", "dim": 64, "user_tower": {"layers": 1, "heads": 2}},
        "stages": {
            "pretrain": {"epochs": 3},
            "adapt": {"epochs": 3, "mode": "auto"},
            "baselines": ["popularity"],
        },
        "train": {
            "batch_size": 32,
            "precision": "fp32",
            "checkpoint_every_steps": CHECKPOINT_EVERY,
            "early_stopping_patience": 10,
            "report_to": [],
        },
        "eval": {"batch_size": 256, "max_users": 300},
        "distributed": {"strategy": "ddp", "timeout_s": 30},
        "output": {"dir": str(out), "keep_last": 2},
    }


def launch(cfg_file: Path, log_dir: Path, port: int, attempt: int) -> subprocess.Popen:
    """The 2-process DDP launch of perf/chaos_train.py (`--resume auto` after attempt 0)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1")
    env["DISTREC_CHAOS_LOG"] = str(log_dir)
    env["DISTREC_CHAOS_ATTEMPT"] = str(attempt)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "launch" / "cpu_multiprocess.yaml"),
        "--main_process_port",
        str(port),
        "--num_processes",
        "2",
        str(ROOT / "perf" / "chaos_train.py"),
        "--config",
        str(cfg_file),
        *(["--resume", "auto"] if attempt else []),
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def batches_logged(log_dir: Path) -> list[dict]:
    """Every finished batch either rank logged, in order per rank (a torn last line of a
    killed rank is skipped)."""
    rows = []
    for path in sorted(log_dir.glob("samples-rank*.jsonl")):
        rank = int(path.stem.rsplit("rank", 1)[1])
        for line in path.read_text().splitlines():
            try:
                rows.append({**json.loads(line), "rank": rank})
            except json.JSONDecodeError:
                continue
    return rows


def kill_at(proc, cfg_file: Path, log_dir: Path, spec: tuple[int, int, signal.Signals]):
    """Wait until `logged` batches (both ranks, every attempt) are in the log, then send
    `sig` to training rank `rank`; returns what happened (None when the run ended first)."""
    logged, rank, sig = spec
    while len(batches_logged(log_dir)) < logged:
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    pid = rank_pids("chaos_train.py", cfg_file).get(rank)
    if pid is None:
        return None
    at = len(batches_logged(log_dir))
    os.kill(pid, sig)
    return {"rank": rank, "signal": sig.name, "after_batches_logged": at}


def interrupted_run(cfg_file: Path, log_dir: Path, at: list[int], rng: random.Random) -> list:
    """Train, killing when the log reaches each count in `at` and resuming each time; the
    last attempt runs to the end."""
    done, port = [], 29810
    for attempt in range(len(at) + 1):
        proc = launch(cfg_file, log_dir, port + attempt, attempt)
        if attempt < len(at):
            sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
            event = kill_at(proc, cfg_file, log_dir, (at[attempt], rng.randint(0, 1), sig))
            if event is not None:
                event["attempt"] = attempt
                done.append(event)
                log(f"chaos: kill {len(done)}/{len(at)}: {event}")
        _, stderr = proc.communicate(timeout=1800)
        if attempt == len(at) or proc.returncode == 0:
            if proc.returncode != 0:
                raise RuntimeError(f"the final attempt failed: {stderr[-3000:]}")
            break
    return done


def effective_stream(rows: list[dict]) -> tuple[dict, int]:
    """(stage, rank, batch) -> users of the last time that batch was done, and how many
    batches were done more than once with other users than the first time."""
    first, last = {}, {}
    changed = 0
    for row in rows:
        key = (row["stage"], row["rank"], row["batch"])
        if key in first and first[key] != row["users"]:
            changed += 1
        first.setdefault(key, row["users"])
        last[key] = row["users"]
    return last, changed


def sample_accounting(straight: list[dict], chaos: list[dict]) -> dict:
    """Lost, repeated and extra batches/samples of the interrupted run against the straight
    one, plus the batches redone (wasted)."""
    want, _ = effective_stream(straight)
    got, changed = effective_stream(chaos)
    lost = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    differ = [k for k in want if k in got and got[k] != want[k]]
    samples_want = Counter((k[0], u) for k, users in want.items() for u in users)
    samples_got = Counter((k[0], u) for k, users in got.items() for u in users)
    return {
        "batches_uninterrupted": len(want),
        "batches_done_interrupted": len(chaos),
        "batches_redone": len(chaos) - len(got),
        "batches_lost": len(lost),
        "batches_extra": len(extra),
        "batches_with_other_users": len(differ) + changed,
        "samples_lost": sum((samples_want - samples_got).values()),
        "samples_repeated": sum((samples_got - samples_want).values()),
    }


def wasted_per_kill(chaos: list[dict], events: list[dict]) -> list[int]:
    """Batches (over both ranks) each kill made a later attempt redo: those its attempt
    finished that a later attempt did again."""
    later: dict = {}
    for row in chaos:
        key = (row["stage"], row["rank"], row["batch"])
        later[key] = max(later.get(key, -1), row["attempt"])
    wasted = []
    for event in events:
        a = event["attempt"]
        keys = {(r["stage"], r["rank"], r["batch"]) for r in chaos if r["attempt"] == a}
        wasted.append(sum(1 for k in keys if later[k] > a))
    return wasted


def same_metrics(a: dict, b: dict) -> bool:
    """Every stage's valid/test metrics and loss history equal."""
    for stage, want in a["stages"].items():
        got = b["stages"].get(stage, {})
        if got.get("valid") != want.get("valid") or got.get("test") != want.get("test"):
            return False
        losses = [h["loss"] for h in want.get("history", [])]
        if [h["loss"] for h in got.get("history", [])] != losses:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the uninterrupted and the interrupted training and write chaos.json."""
    p = argparse.ArgumentParser(prog="python -m perf.chaos")
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "chaos")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    data = args.work / "data"
    for spec in (SOURCE, TARGET):
        synth_domain(spec, data)
    runs = {}
    for name in ("straight", "chaos"):
        out = args.work / name
        if out.exists():
            raise SystemExit(f"{out} exists: remove it or pass another --work")
        (args.work / f"{name}-log").mkdir(parents=True)
        cfg_file = args.work / f"{name}.yaml"
        cfg_file.write_text(yaml.safe_dump(run_config(data, out)))
        runs[name] = (cfg_file, out, args.work / f"{name}-log")
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    interrupted_run(runs["straight"][0], runs["straight"][2], [], rng)
    straight_s = time.perf_counter() - t0
    # Kill points spread over the whole training (every stage), as counts of logged
    # batches; redone batches count too, so later kills land a little earlier.
    total = len(batches_logged(runs["straight"][2]))
    at = sorted(rng.sample(range(10, total - 10), args.kills))
    t0 = time.perf_counter()
    events = interrupted_run(runs["chaos"][0], runs["chaos"][2], at, rng)
    chaos_s = time.perf_counter() - t0
    straight_rows, chaos_rows = (batches_logged(runs[n][2]) for n in ("straight", "chaos"))
    metrics = [json.loads((runs[n][1] / "metrics.json").read_text()) for n in ("straight", "chaos")]
    wasted = wasted_per_kill(chaos_rows, events)
    result = {
        "kills": events,
        "kills_survived": len(events),
        "identical_metrics": same_metrics(*metrics),
        "samples": sample_accounting(straight_rows, chaos_rows),
        "wasted_batches_per_kill": wasted,
        "checkpoint_every_steps": CHECKPOINT_EVERY,
        # One interval is CHECKPOINT_EVERY batches on each of the 2 ranks.
        "wasted_within_one_interval": all(w <= 2 * CHECKPOINT_EVERY for w in wasted),
        "wall_s": {"uninterrupted": round(straight_s, 1), "interrupted": round(chaos_s, 1)},
        "setup": "2-process DDP on CPU (gloo), cached mode, synthetic ML-100K-sized domains",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("kills_survived", "identical_metrics", "samples")}))
    return 0 if result["identical_metrics"] and not result["samples"]["samples_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
