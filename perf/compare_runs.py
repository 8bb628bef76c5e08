"""Are two finished runs the same? Every stage's valid/test metrics (exact float equality and
the largest difference) and every user's rank in ranks.parquet, compared run folder to run
folder; writes compare.json + compare.md.

The check behind a refactor that must not change numbers (issue 13's redesign: the demo
before and after, perf/results/redesign_parity/), or a determinism check of one commit:

    python -m perf.compare_runs --a runs/before --b runs/after --out perf/results/redesign_parity
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from perf.common import write_result

RANK_KEYS = ["stage", "split", "domain", "user"]


def read_run(folder: Path) -> tuple[dict, pd.DataFrame]:
    """A run folder's metrics.json and ranks.parquet (sorted by stage, split, domain, user)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    ranks = pd.read_parquet(folder / "ranks.parquet").sort_values(RANK_KEYS, ignore_index=True)
    return metrics, ranks


def compare_stage(a: dict, b: dict) -> dict:
    """Per split: metrics equal as floats, the keys only one side has, the largest difference."""
    out = {}
    for split in ("valid", "test"):
        shared = sorted(set(a[split]) & set(b[split]))
        diff = max((abs(a[split][k] - b[split][k]) for k in shared), default=0.0)
        out[split] = {
            "identical": all(a[split][k] == b[split][k] for k in shared),
            "max_abs_diff": diff,
            "only_in_a": sorted(set(a[split]) - set(b[split])),
            "only_in_b": sorted(set(b[split]) - set(a[split])),
        }
    return out


def compare_ranks(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Users in both tables and whether every one of their ranks is equal."""
    both = a.merge(b, on=RANK_KEYS, suffixes=("_a", "_b"))
    return {
        "rows_a": len(a),
        "rows_b": len(b),
        "rows_matched": len(both),
        "identical": len(both) == len(a) == len(b) and bool((both.rank_a == both.rank_b).all()),
        "max_abs_diff": float((both.rank_a - both.rank_b).abs().max()) if len(both) else 0.0,
    }


def compare(a_dir: Path, b_dir: Path) -> dict:
    """The whole comparison of run `a_dir` with run `b_dir`."""
    (ma, ra), (mb, rb) = read_run(a_dir), read_run(b_dir)
    stages = {
        s: compare_stage(ma["stages"][s], mb["stages"][s])
        for s in ma["stages"]
        if s in mb["stages"]
    }
    ranks = compare_ranks(ra, rb)
    accuracy_same = all(v[s]["identical"] for v in stages.values() for s in ("valid", "test"))
    return {
        "benchmark": "compare_runs",
        "a": str(a_dir),
        "b": str(b_dir),
        "stage_order_same": list(ma["stages"]) == list(mb["stages"]),
        "stages_only_in_a": sorted(set(ma["stages"]) - set(mb["stages"])),
        "stages_only_in_b": sorted(set(mb["stages"]) - set(ma["stages"])),
        "identical": accuracy_same and ranks["identical"],
        "stages": stages,
        "ranks": ranks,
        "wall_s": {"a": ma.get("wall_s"), "b": mb.get("wall_s")},
        "test_ndcg@10": {s: ma["stages"][s]["test"]["ndcg@10"] for s in stages},
    }


def markdown(result: dict) -> str:
    """compare.md: the verdict, then one row per stage."""
    lines = [
        f"# {result['a']} vs {result['b']}",
        "",
        f"Identical (every shared metric of every stage, every user's rank): **{result['identical']}**; "
        f"stage order the same: {result['stage_order_same']}; ranks: "
        f"{result['ranks']['rows_matched']} of {result['ranks']['rows_a']} rows matched.",
        "",
        "| stage | valid identical | test identical | max abs diff | test ndcg@10 |",
        "|---|---|---|---|---|",
    ]
    for stage, c in result["stages"].items():
        diff = max(c["valid"]["max_abs_diff"], c["test"]["max_abs_diff"])
        lines.append(
            f"| {stage} | {c['valid']['identical']} | {c['test']['identical']} | {diff:.3g} | "
            f"{result['test_ndcg@10'][stage]:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Compare two run folders; exit 0 when identical, 1 otherwise."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True, help="a finished run folder (metrics.json)")
    p.add_argument("--b", type=Path, required=True, help="the run folder to compare with")
    p.add_argument("--out", type=Path, required=True, help="folder for compare.json / compare.md")
    args = p.parse_args(argv)
    result = compare(args.a, args.b)
    write_result(args.out / "compare.json", result)
    (args.out / "compare.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
