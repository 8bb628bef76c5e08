"""What each quality change bought: one config trained under several variants x seeds.

    python perf/ablation.py --config configs/quality/id_ml100k.yaml --seeds 2 \
        --out perf/results/ablation/id_ml100k --stage baseline_id_target_only

Each variant is a set of dotted overrides (VARIANTS: train window, score, step budget),
trained per seed through perf/quality.py's launcher into <out>/<variant>/seed-<s> (a
finished seed is skipped, so an interrupted ablation resumes). Writes ablation.json and
ablation.md: per variant, the stage's validation and test NDCG@10 mean +/- std over seeds,
and its test ratio to the first variant with a paired bootstrap interval over test users.
Variants are judged on validation; test is reported, never tuned on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distrec.eval.bootstrap import paired_ratio
from perf.common import write_result
from perf.quality import finished_seeds, seed_record, seed_stage_ranks, stage_summary, train_seeds

# (name, overrides): cumulative changes, each stating every setting it depends on (the
# config's own defaults may move); the first is the reference every other is compared with.
UNTUNED = [
    "stages.id_baseline_lr=1e-3",
    "stages.id_baseline_dropout=0.2",
    "stages.id_baseline_score=cosine",
    "stages.id_baseline_temperature=0.05",
]
TUNED = [
    "stages.id_baseline_lr=5.76e-3",
    "stages.id_baseline_dropout=0.3",
    "stages.id_baseline_score=cosine",
    "stages.id_baseline_temperature=0.1",
]
VARIANTS: list[tuple[str, list[str]]] = [
    (
        "window=last (before)",
        ["data.train_window=last", "train.early_stopping_patience=4", *UNTUNED],
    ),
    ("window=last, patience 10", ["data.train_window=last", *UNTUNED]),
    ("window=random, patience 10", ["data.train_window=random", *UNTUNED]),
    ("window=random, patience 10, tuned", ["data.train_window=random", *TUNED]),
    ("window=all, patience 10, tuned", ["data.train_window=all", *TUNED]),
    (
        "window=random, patience 10, tuned lr/dropout, dot/1.0",
        [
            "data.train_window=random",
            *TUNED[:2],
            "stages.id_baseline_score=dot",
            "stages.id_baseline_temperature=1.0",
        ],
    ),
]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def summarise(out: Path, stage: str, seeds: int | None) -> list[dict]:
    """One row per variant; with `seeds` None, every finished seed of each variant, and a
    variant with none is listed as not run."""
    rows, reference = [], None
    for name, overrides in VARIANTS:
        d = out / slug(name)
        try:
            records = [seed_record(d, s) for s in finished_seeds(d, seeds)]
        except FileNotFoundError:
            if seeds is not None:
                raise
            rows.append({"variant": name, "overrides": overrides, "seeds": 0})
            continue
        stats = stage_summary(records)[stage]
        ranks = seed_stage_ranks(records, stage, "test")
        row = {
            "variant": name,
            "overrides": overrides,
            "seeds": len(records),
            "valid_ndcg@10": stats["valid/ndcg@10"],
            "test_ndcg@10": stats["test/ndcg@10"],
            "epochs": [len(r["stages"][stage].get("history", [])) for r in records],
            "steps": [r["stages"][stage].get("steps") for r in records],
            "targets_per_epoch": records[0]["stages"][stage].get("train_targets_per_epoch"),
        }
        if reference is None:
            reference = ranks
        else:
            iv = paired_ratio(ranks, reference, "ndcg@10")
            row["test_ratio_to_first"] = {"ratio": iv.ratio, "low": iv.low, "high": iv.high}
        rows.append(row)
    return rows


def markdown(rows: list[dict], stage: str) -> str:
    def cell(stat: dict) -> str:
        std = f" +/- {stat['std']:.4f}" if stat.get("std") is not None else ""
        return f"{stat['mean']:.4f}{std}"

    lines = [
        f"# Ablation: {stage}",
        "",
        "| variant | seeds | targets/epoch | epochs | valid NDCG@10 | test NDCG@10 | test vs first |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["seeds"]:
            lines.append(f"| {r['variant']} | 0 (not run) | | | | | |")
            continue
        ratio = r.get("test_ratio_to_first")
        vs = f"{ratio['ratio']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]" if ratio else "1"
        lines.append(
            f"| {r['variant']} | {r['seeds']} | {r['targets_per_epoch']} | "
            f"{'/'.join(map(str, r['epochs']))} | {cell(r['valid_ndcg@10'])} | "
            f"{cell(r['test_ndcg@10'])} | {vs} |"
        )
    lines += [
        "",
        "Mean +/- sample std over seeds; `test vs first`: ratio of mean test NDCG@10 to the "
        "first variant with a paired bootstrap 95% interval over test users (seeds pooled).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage", default="baseline_id_target_only", help="the stage compared")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument(
        "--aggregate-only",
        action="store_true",
        help="train nothing; summarise every finished seed (unfinished variants: not run)",
    )
    args = p.parse_args(argv)
    if not args.aggregate_only:
        for name, overrides in VARIANTS:
            train_seeds(args.config, args.seeds, args.out / slug(name), overrides, args.processes)
    rows = summarise(args.out, args.stage, None if args.aggregate_only else args.seeds)
    write_result(args.out / "ablation.json", {"stage": args.stage, "rows": rows})
    (args.out / "ablation.md").write_text(markdown(rows, args.stage))
    print(markdown(rows, args.stage))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
