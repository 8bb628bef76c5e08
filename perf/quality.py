"""distrec's quality over seeds: train a config once per seed, then report each stage's
mean +/- std over seeds and the transfer ratios with paired bootstrap intervals.

    python perf/quality.py --config configs/demo.yaml --seeds 3 --out perf/results/quality/demo \
        [--processes 2] [--peers perf/results/peers/ml-100k] [override ...]
    python perf/quality.py --out perf/results/quality/demo --aggregate-only [--peers DIR]

Seed s trains into <out>/seed-<s> with `seed=s output.dir=<out>/seed-<s>` plus the overrides,
launched like `distrec demo` (accelerate launch, CPU multi-process template); a seed whose
directory already holds metrics.json is skipped, so an interrupted measurement resumes.
Writes <out>/quality.json, quality.md and quality.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distrec.demo import LAUNCHER
from distrec.eval.bootstrap import paired_ratio, per_user_metric, read_ranks
from distrec.eval.bootstrap import select_stage as stage_rows
from distrec.train.outputs import ROWS
from distrec.utils.plotting import pyplot, save_figure
from distrec.utils.progress import log
from perf.common import write_result

SUMMARY = [("test", "ndcg@10"), ("test", "recall@10"), ("test", "mrr@10"), ("valid", "ndcg@10")]
PEER = "best peer"
# (numerator, denominator, split) of every ratio reported, all on NDCG@10.
COMPARISONS = [
    ("adapt", "baseline_id_target_only", "test"),
    ("adapt", "baseline_text_target_only", "test"),
    ("adapt", PEER, "test"),
    ("baseline_id_target_only", PEER, "test"),
    ("zero_shot", "baseline_popularity", "valid"),
    ("zero_shot", "baseline_popularity", "test"),
]
RATIO_METRIC = "ndcg@10"
PRETTY = {"ndcg": "NDCG", "recall": "Recall", "mrr": "MRR"}
LABELS = {**dict(ROWS), "pretrain": "pretraining (source domains)"}
LAUNCH_ENV = {"ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
RESERVED = ("seed", "output.dir")


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def train_command(config: str, seed: int, out: Path, overrides: list[str], processes: int):
    """The command and environment that train one seed, as `distrec demo` launches."""
    bad = [o for o in overrides if o.split("=", 1)[0].strip() in RESERVED]
    if bad:
        raise ValueError(f"overrides {bad}: quality.py sets {list(RESERVED)} per seed; drop them")
    args = ["--config", config, f"seed={seed}", f"output.dir={seed_dir(out, seed)}", *overrides]
    if processes == 1:
        return [sys.executable, "-m", "distrec.train", *args], {"HF_HUB_OFFLINE": "1"}
    launch = ["-m", "accelerate.commands.launch", "--config_file", str(LAUNCHER)]
    cmd = [sys.executable, *launch, "--num_processes", str(processes), "-m", "distrec.train"]
    return [*cmd, *args], dict(LAUNCH_ENV)


def prepare_data(config: str, overrides: list[str]) -> None:
    """Prepare the domains once, before any launch (the ranks would race to do it)."""
    from distrec.config import load_config
    from distrec.data.prepare import prepare_domains
    from distrec.train.preflight import preflight

    cfg = load_config(config, overrides)
    preflight(cfg)
    prepare_domains(cfg)


def train_seeds(config: str, seeds: int, out: Path, overrides: list[str], processes: int) -> None:
    """Train seeds 0..seeds-1, skipping finished ones; each seed dir gets a launch.json."""
    todo = [s for s in range(seeds) if not (seed_dir(out, s) / "metrics.json").exists()]
    for s in sorted(set(range(seeds)) - set(todo)):
        log(f"seed {s + 1}/{seeds}: {seed_dir(out, s)} already finished, skipped")
    launches = {s: train_command(config, s, out, overrides, processes) for s in todo}
    if todo:
        prepare_data(config, overrides)
    start, walls = time.perf_counter(), []
    for done, s in enumerate(todo, 1):
        cmd, env = launches[s]
        d = seed_dir(out, s)
        d.mkdir(parents=True, exist_ok=True)
        log(f"seed {s + 1}/{seeds}: launching " + " ".join(cmd[1:]))
        t0 = time.perf_counter()
        code = subprocess.run(cmd, env={**os.environ, **env}, check=False).returncode
        walls.append(time.perf_counter() - t0)
        record = {"command": cmd, "env": env, "returncode": code, "wall_s": walls[-1]}
        (d / "launch.json").write_text(json.dumps(record, indent=2))
        if code != 0:
            raise RuntimeError(
                f"seed {s}: training exited with {code} (command in {d / 'launch.json'}); "
                f"fix it and rerun the same command: finished seeds are skipped"
            )
        eta = np.mean(walls) * (len(todo) - done)
        log(
            f"seed {s + 1}/{seeds} done in {walls[-1]:.0f}s; "
            f"elapsed {time.perf_counter() - start:.0f}s, ETA {eta:.0f}s"
        )


def finished_seeds(out: Path, seeds: int | None) -> list[int]:
    """Seeds 0..seeds-1 (all required), or every finished seed-<s> under `out`."""
    if seeds is None:
        found = [p.parent.name.removeprefix("seed-") for p in out.glob("seed-*/metrics.json")]
        chosen = sorted(int(s) for s in found if s.isdigit())
    else:
        chosen = list(range(seeds))
    missing = [
        str(seed_dir(out, s)) for s in chosen if not (seed_dir(out, s) / "metrics.json").exists()
    ]
    if missing or not chosen:
        raise FileNotFoundError(
            f"no finished run (metrics.json) in {missing or str(out / 'seed-*')}; "
            f"train them first (drop --aggregate-only)"
        )
    return chosen


def seed_record(out: Path, seed: int) -> dict:
    d = seed_dir(out, seed)
    metrics = json.loads((d / "metrics.json").read_text())
    launch = json.loads((d / "launch.json").read_text()) if (d / "launch.json").exists() else {}
    return {
        "seed": seed,
        "dir": str(d),
        "command": launch.get("command"),
        "wall_s": launch.get("wall_s", metrics.get("wall_s")),
        "stages": metrics["stages"],
    }


def mean_std(values: list[float]) -> dict:
    """Sample std over seeds (None with a single seed: one run says nothing of the spread)."""
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "values": values,
    }


def stage_summary(records: list[dict]) -> dict:
    """stage -> "split/metric" -> mean, std and per-seed values, for stages every seed ran."""
    # Stages that rank (the rating references judge ratings only: perf/heads.py reports them).
    present = set.intersection(
        *({k for k, v in r["stages"].items() if v.get("ranked", True)} for r in records)
    )
    order = [k for k, _ in ROWS if k in present] + sorted(present - {k for k, _ in ROWS})
    return {
        stage: {
            f"{split}/{m}": mean_std([r["stages"][stage][split][m] for r in records])
            for split, m in SUMMARY
        }
        for stage in order
    }


def seed_stage_ranks(records: list[dict], stage: str, split: str) -> pd.DataFrame:
    """One stage's ranks from every seed, with a seed column (errors name the file)."""
    parts = []
    for r in records:
        ranks = read_ranks(Path(r["dir"]) / "ranks.parquet")
        parts.append(stage_rows(ranks, stage, split).assign(seed=r["seed"]))
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs["source"] = str(Path(records[0]["dir"]).parent / "seed-*" / "ranks.parquet")
    return frame


def peer_metrics(ranks: pd.DataFrame, stage: str) -> dict:
    out = {}
    for split, m in SUMMARY:
        rows = ranks[(ranks["stage"] == stage) & (ranks["split"] == split)]
        out[f"{split}/{m}"] = (
            float(per_user_metric(rows["rank"].to_numpy(), m).mean()) if len(rows) else None
        )
    return out


def best_peer(peers: Path) -> tuple[dict, pd.DataFrame]:
    """The peer (file, stage) with the highest test NDCG@10 under `peers/*/ranks.parquet`,
    and its test ranks; the record lists every candidate."""
    files = sorted(peers.glob("*/ranks.parquet"))
    if not files:
        raise FileNotFoundError(f"--peers {peers}: no {peers / '*' / 'ranks.parquet'}")
    candidates = []
    for path in files:
        ranks = read_ranks(path)
        for stage in sorted(ranks.loc[ranks["split"] == "test", "stage"].unique()):
            candidates.append({"name": stage, "path": str(path), **peer_metrics(ranks, stage)})
    if not candidates:
        raise ValueError(f"--peers {peers}: no peer has test ranks in {[str(f) for f in files]}")
    best = max(candidates, key=lambda c: c["test/ndcg@10"])
    rows = stage_rows(read_ranks(best["path"]), best["name"], "test")
    return {**best, "candidates": candidates}, rows.drop(columns=["seed"], errors="ignore")


def comparisons(records, stages, peer, *, n_boot: int, boot_seed: int) -> list[dict]:
    """Every ratio of COMPARISONS whose stages ran; the others are listed as skipped."""
    out = []
    for num, den, split in COMPARISONS:
        name = f"{num} / {peer['name'] if den == PEER and peer else den}"
        entry = {"name": name, "numerator": num, "denominator": den, "split": split}
        missing = [s for s in (num, den) if s not in stages and s != PEER]
        if den == PEER and peer is None:
            missing.append("--peers")
        if missing:
            out.append({**entry, "skipped": f"not run: {', '.join(missing)}"})
            continue
        a = seed_stage_ranks(records, num, split)
        b = peer["ranks"] if den == PEER else seed_stage_ranks(records, den, split)
        interval = paired_ratio(a, b, RATIO_METRIC, n_boot=n_boot, seed=boot_seed)
        out.append({**entry, **dataclasses.asdict(interval), "excludes_one": interval.excludes_one})
    return out


def aggregate(
    out: Path,
    *,
    seeds: int | None = None,
    peers: Path | None = None,
    n_boot: int = 2000,
    boot_seed: int = 0,
) -> dict:
    """Everything quality.json holds except the machine description: per-seed runs,
    per-stage mean/std, the best peer and the ratios with their intervals."""
    records = [seed_record(out, s) for s in finished_seeds(out, seeds)]
    stages = stage_summary(records)
    peer = None
    if peers is not None:
        record, rows = best_peer(peers)
        peer = {**record, "ranks": rows}
    ratios = comparisons(records, stages, peer, n_boot=n_boot, boot_seed=boot_seed)
    return {
        "seeds": [r["seed"] for r in records],
        "runs": [{k: v for k, v in r.items() if k != "stages"} for r in records],
        "stages": stages,
        "peer": {k: v for k, v in peer.items() if k != "ranks"} if peer else None,
        "ratio_metric": RATIO_METRIC,
        "ratios": ratios,
        "bootstrap": {
            "n_boot": n_boot,
            "seed": boot_seed,
            "level": 0.95,
            "interval": "percentile",
            "unit": "user (all seeds of a drawn user; a peer's single run pairs with each seed)",
        },
    }


def pretty(metric: str) -> str:
    kind, _, k = metric.partition("@")
    return f"{PRETTY.get(kind, kind)}@{k}"


def _cell(stat: dict | float | None) -> str:
    if stat is None:
        return "n/a"
    if isinstance(stat, dict):
        return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if stat["std"] is not None else "")
    return f"{stat:.4f}"


def markdown(result: dict) -> str:
    labels = LABELS
    seeds = result["seeds"]
    walls = ", ".join(
        f"{r['seed']}: {r['wall_s']:.0f}s" if r["wall_s"] is not None else f"{r['seed']}: ?"
        for r in result["runs"]
    )
    config = f"`{result['config']}`" if result.get("config") else "(see each seed-*/config.yaml)"
    head = " | ".join(f"{split} {pretty(m)}" for split, m in SUMMARY)
    lines = [
        f"# distrec quality over {len(seeds)} seed(s)",
        "",
        f"Config {config}, overrides `{' '.join(result.get('overrides') or []) or 'none'}`, "
        f"{result.get('processes') or '?'} process(es) per run, seeds {seeds}; "
        f"wall time per seed: {walls}.",
        "",
        "Mean ± sample std over seeds (target domain, full ranking, history masked).",
        "",
        f"| stage | {head} |",
        "|---|" + "---|" * len(SUMMARY),
    ]
    for stage, stats in result["stages"].items():
        cells = " | ".join(_cell(stats[f"{s}/{m}"]) for s, m in SUMMARY)
        lines.append(f"| {labels.get(stage, stage)} | {cells} |")
    if result["peer"]:
        p = result["peer"]
        cells = " | ".join(_cell(p[f"{s}/{m}"]) for s, m in SUMMARY)
        lines.append(f"| peer {p['name']} (1 run, best of {len(p['candidates'])}) | {cells} |")
    b = result["bootstrap"]
    lines += [
        "",
        f"Ratios of {pretty(result['ratio_metric'])}, mean(A) / mean(B) over the users both "
        f"ranked; {int(b['level'] * 100)}% percentile interval from a paired bootstrap "
        f"({b['n_boot']} resamples of users, each drawn user with all its seeds). "
        "An interval wholly above 1 means A beats B on these users.",
        "",
        "| A / B | split | ratio | 95% interval | users x seeds |",
        "|---|---|---|---|---|",
    ]
    skipped = []
    for r in result["ratios"]:
        if "skipped" in r:
            skipped.append(f"{r['name']} on {r['split']} ({r['skipped']})")
            continue
        lines.append(
            f"| {r['name']} | {r['split']} | {r['ratio']:.3f}x | [{r['low']:.3f}, {r['high']:.3f}]"
            f"{' *' if r['excludes_one'] else ''} | {r['n_users']} x {r['n_seeds']} |"
        )
    lines += ["", "`*`: the interval excludes 1."]
    if skipped:
        lines += ["", "Not computed: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> str:
    labels = LABELS
    names = [labels.get(s, s) for s in result["stages"]]
    stats = [v["test/ndcg@10"] for v in result["stages"].values()]
    means, errs = [s["mean"] for s in stats], [s["std"] or 0.0 for s in stats]
    colors = ["#4477aa"] * len(names)
    if result["peer"]:
        names.append(f"peer {result['peer']['name']} (1 run)")
        means.append(result["peer"]["test/ndcg@10"])
        errs.append(0.0)
        colors.append("#aa7744")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    ax.barh(names[::-1], means[::-1], xerr=errs[::-1], color=colors[::-1], capsize=4)
    ax.set(title=f"test NDCG@10, mean ± std over {len(result['seeds'])} seed(s)", xlabel="NDCG@10")
    return save_figure(fig, path)


def recorded_launch(runs: list[dict]) -> dict:
    """Config, overrides and processes as recorded in the first seed's launch.json."""
    cmd = next((r["command"] for r in runs if r["command"]), None)
    if cmd is None:
        return {"config": None, "overrides": None, "processes": None}
    at = cmd.index("--config")
    return {
        "config": cmd[at + 1],
        "overrides": [o for o in cmd[at + 2 :] if o.split("=", 1)[0] not in RESERVED],
        "processes": int(cmd[cmd.index("--num_processes") + 1]) if "--num_processes" in cmd else 1,
    }


def write_outputs(out: Path, result: dict) -> None:
    write_result(out / "quality.json", result)
    (out / "quality.md").write_text(markdown(result))
    plot(result, out / "quality.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", help="run config to train per seed (not needed with --aggregate-only)"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds 0..N-1 (default 3; with --aggregate-only: every finished seed dir)",
    )
    p.add_argument("--out", required=True, help="seed-<s>/ run dirs and quality.* go here")
    p.add_argument("--processes", type=int, default=2, help="processes per run (1: no launcher)")
    p.add_argument("--peers", type=Path, default=None, help="folder of peer runs (*/ranks.parquet)")
    p.add_argument("--aggregate-only", action="store_true", help="re-aggregate, train nothing")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("overrides", nargs="*", help="dotted overrides for every seed (train.lr=3e-4)")
    args = p.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    if not args.aggregate_only:
        if args.config is None:
            p.error("--config is required unless --aggregate-only")
        if args.processes < 1 or (args.seeds is not None and args.seeds < 1):
            p.error(f"--processes {args.processes} / --seeds {args.seeds}: expected >= 1")
        args.seeds = 3 if args.seeds is None else args.seeds
        train_seeds(args.config, args.seeds, out, args.overrides, args.processes)
    result = aggregate(out, seeds=args.seeds, peers=args.peers, n_boot=args.n_boot)
    launch = (
        recorded_launch(result["runs"])
        if args.aggregate_only
        else {"config": args.config, "overrides": args.overrides, "processes": args.processes}
    )
    result.update(
        **launch,
        aggregate_only=args.aggregate_only,
        invocation_wall_s=time.perf_counter() - start,
    )
    write_outputs(out, result)
    log(f"wrote {out / 'quality.json'}, {out / 'quality.md'}, {out / 'quality.png'}")
    print("\n" + markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
