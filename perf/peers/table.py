"""The peers table: RecBole peers and distrec runs, every metric recomputed from ranks.

Runs in distrec's .venv. Each row's numbers come from a ranks.parquet (columns stage, split,
user, rank: 0-based fractional ranks under distrec's protocol) through one function,
distrec.eval.metrics.metrics_from_ranks; run.json / metrics.json only add the training facts
(epochs, best epoch, wall time, threads, stopping reason).

    .venv/bin/python perf/peers/table.py --domain ml-100k [--runs runs/demo ...]

writes perf/results/peers/<domain>/peers.json and peers.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
import torch

from distrec.eval.metrics import metrics_from_ranks

KS = [10, 20, 50]
RANK_COLUMNS = ("stage", "split", "user", "rank")
REPO = Path(__file__).resolve().parents[2]


def read_ranks(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    missing = [c for c in RANK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (want {list(RANK_COLUMNS)})")
    bad = sorted(set(df["split"]) - {"valid", "test"})
    if bad:
        raise ValueError(f"{path}: unknown split values {bad}")
    dup = df.duplicated(["stage", "split", "user"])
    if dup.any():
        raise ValueError(f"{path}: {int(dup.sum())} duplicate (stage, split, user) rows")
    if (df["rank"] < 0).any() or df["rank"].isna().any():
        raise ValueError(f"{path}: negative or missing ranks")
    return df


def metrics_for(df: pd.DataFrame, stage: str) -> dict[str, dict[str, float]]:
    """{"valid": {...}, "test": {...}} for one stage, from its ranks only."""
    out = {}
    for split in ("valid", "test"):
        r = df.loc[(df["stage"] == stage) & (df["split"] == split), "rank"].to_numpy("float64")
        out[split] = metrics_from_ranks(torch.tensor(r), ks=KS)
    return out


def peer_rows(peers_dir: Path) -> list[dict]:
    rows = []
    for run_file in sorted(peers_dir.glob("*/run.json")):
        run = json.loads(run_file.read_text())
        ranks_file = run_file.parent / "ranks.parquet"
        if not ranks_file.exists():
            print(f"[peers] {run_file.parent.name}: run.json without ranks.parquet, skipped")
            continue
        df = read_ranks(ranks_file)
        stage = run.get("stage") or f"recbole_{run['model'].lower()}"
        m = metrics_for(df, stage)
        rows.append(
            {
                "name": f"RecBole {run['model']}",
                "source": "recbole",
                "stage": stage,
                "ranks": _rel(ranks_file),
                "valid": m["valid"],
                "test": m["test"],
                "epochs": run.get("epochs_run"),
                "best_epoch": run.get("best_epoch"),
                "wall_s": run.get("wall_s"),
                "first_best_s": run.get("first_best_elapsed_s"),
                "threads": run.get("threads"),
                "processes": 1,
                "stopping": run.get("stopping_reason"),
                "capped": bool(run.get("capped")),
                "seed": run.get("seed"),
                "recbole_version": run.get("recbole_version"),
            }
        )
    return rows


def run_rows(run_dir: Path) -> list[dict]:
    """Rows for each stage of a distrec run directory that has ranks."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ranks_file = run_dir / "ranks.parquet"
    if not ranks_file.exists():
        raise FileNotFoundError(f"{ranks_file}: distrec run without ranks; cannot recompute")
    df = read_ranks(ranks_file)
    ranked = set(df["stage"])
    rows = []
    for stage, rec in metrics.get("stages", {}).items():
        if stage not in ranked:
            print(f"[peers] {run_dir}: stage {stage} has no ranks, left out of the table")
            continue
        m = metrics_for(df, stage)
        reported = (rec.get("test") or {}).get("ndcg@10")
        drift = None if reported is None else abs(reported - m["test"].get("ndcg@10", math.nan))
        history = rec.get("history") or []
        best = rec.get("best_epoch")
        if best is None and history:
            best = max(history, key=lambda h: h.get("valid_ndcg@10", -1.0)).get("epoch")
        rows.append(
            {
                "name": f"distrec {stage} (seed {metrics.get('config', {}).get('seed', '?')})",
                "source": "distrec",
                "stage": stage,
                "run": str(run_dir),
                "ranks": _rel(ranks_file),
                "valid": m["valid"],
                "test": m["test"],
                "epochs": len(history) if history else None,
                "best_epoch": best,
                "wall_s": rec.get("wall_s"),
                "first_best_s": None,
                "threads": None,
                "processes": metrics.get("world_size"),
                "stopping": rec.get("stopping_reason"),
                "capped": bool(rec.get("capped", False)),
                "seed": (metrics.get("config") or {}).get("seed"),
                "reported_test_ndcg@10_drift": drift,
            }
        )
    for stage in sorted(ranked - set(metrics.get("stages", {}))):
        print(f"[peers] {run_dir}: ranks for stage {stage} not in metrics.json, left out")
    return rows


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _f(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def render_md(domain: str, rows: list[dict]) -> str:
    lines = [
        f"# Peers on {domain}",
        "",
        "Every metric is recomputed from ranks.parquet by distrec.eval.metrics.metrics_from_ranks:",
        "full ranking over the whole catalog, history masked, target rankable, ties count half.",
        "",
        "| row | test NDCG@10 | test Recall@10 | test MRR@10 | valid NDCG@10 | users | epochs "
        "| best epoch | wall | first best at | threads | stopping |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stop = r.get("stopping") or "–"
        if r.get("capped"):
            stop = "capped: lower bound"
        threads = (
            r["threads"]
            if r.get("threads") is not None
            else (f"{r['processes']} proc" if r.get("processes") else "–")
        )
        wall = "–" if r.get("wall_s") is None else f"{r['wall_s']:.0f} s"
        first = "–" if r.get("first_best_s") is None else f"{r['first_best_s']:.0f} s"
        lines.append(
            f"| {r['name']} | {_f(r['test'].get('ndcg@10'))} | {_f(r['test'].get('recall@10'))} "
            f"| {_f(r['test'].get('mrr@10'))} | {_f(r['valid'].get('ndcg@10'))} "
            f"| {int(r['test'].get('users', 0))} | {r.get('epochs') if r.get('epochs') is not None else '–'} "
            f"| {r.get('best_epoch') if r.get('best_epoch') is not None else '–'} | {wall} | {first} "
            f"| {threads} | {stop} |"
        )
    lines += [
        "",
        "capped: stopped by the wall-time cap, not by its own early stopping (its numbers are a "
        "lower bound). first best at: wall seconds since training start when the run first "
        "reached its best validation NDCG@10.",
        "",
    ]
    return "\n".join(lines)


def build_table(domain: str, peers_dir: Path, runs: list[Path]) -> dict:
    rows = peer_rows(peers_dir)
    for run in runs:
        rows.extend(run_rows(run))
    users = {r["name"]: int(r["test"].get("users", 0)) for r in rows}
    return {
        "domain": domain,
        "ks": KS,
        "metric_source": "ranks.parquet -> distrec.eval.metrics.metrics_from_ranks",
        "same_users": len(set(users.values())) <= 1,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--domain", default="ml-100k")
    ap.add_argument("--peers", default=None, help="default perf/results/peers/<domain>")
    ap.add_argument("--runs", nargs="+", default=[], help="distrec run directories")
    ap.add_argument("--out", default=None, help="default: the peers folder")
    args = ap.parse_args(argv)
    peers_dir = (
        Path(args.peers) if args.peers else REPO / "perf" / "results" / "peers" / args.domain
    )
    out = Path(args.out) if args.out else peers_dir
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(args.domain, peers_dir, [Path(r) for r in args.runs])
    if not table["same_users"]:
        print("[peers] WARNING: rows were evaluated on different user sets")
    (out / "peers.json").write_text(json.dumps(table, indent=1) + "\n")
    md = render_md(args.domain, table["rows"])
    (out / "peers.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
