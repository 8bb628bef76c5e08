"""What the sampled softmax (train.loss=sampled) costs in quality: the same config trained
with the full softmax and with the sampled one, over seeds, on the same split; each stage's
test NDCG@10 ratio sampled / full with a paired bootstrap interval over users.

    python perf/sampled_quality.py --seeds 3 --out perf/results/scale/sampled_ml1m \
        [--config configs/scale/sampled_ml1m.yaml] [--negatives 256] [--processes 1]

Runs go to <out>/full/seed-<s> and <out>/sampled/seed-<s> (perf/quality.py's launcher, so
finished seeds are skipped); writes <out>/sampled.json and sampled.md. Checkpoints are
selected on validation, as in every run; the test split is only reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distrec.eval.bootstrap import paired_ratio
from perf.common import write_result
from perf.quality import finished_seeds, seed_record, seed_stage_ranks, stage_summary, train_seeds

CONFIG = "configs/scale/sampled_ml1m.yaml"
STAGES = ("baseline_id_target_only", "baseline_text_target_only")
GOAL = 0.98


def variants(negatives: int, sampling: str) -> dict[str, list[str]]:
    """Overrides of each variant: the exact softmax, and the sampled one."""
    sampled = [
        "train.loss=sampled",
        f"train.num_negatives={negatives}",
        f"train.negative_sampling={sampling}",
    ]
    return {"full": ["train.loss=full"], "sampled": sampled}


def aggregate(out: Path, seeds: int, negatives: int, sampling: str, n_boot: int) -> dict:
    """Per stage: both variants' mean +/- std over seeds and the paired ratio."""
    records = {
        v: [seed_record(out / v, s) for s in finished_seeds(out / v, seeds)]
        for v in ("full", "sampled")
    }
    summary = {v: stage_summary(r) for v, r in records.items()}
    rows = []
    for stage in STAGES:
        if stage not in summary["full"] or stage not in summary["sampled"]:
            continue
        full = seed_stage_ranks(records["full"], stage, "test")
        sampled = seed_stage_ranks(records["sampled"], stage, "test")
        ratio = paired_ratio(sampled, full, "ndcg@10", n_boot=n_boot)
        rows.append(
            {
                "stage": stage,
                "full": summary["full"][stage]["test/ndcg@10"],
                "sampled": summary["sampled"][stage]["test/ndcg@10"],
                "valid_full": summary["full"][stage]["valid/ndcg@10"],
                "valid_sampled": summary["sampled"][stage]["valid/ndcg@10"],
                "ratio": dataclasses.asdict(ratio),
                "goal": GOAL,
            }
        )
    return {
        "config": CONFIG,
        "seeds": seeds,
        "negatives": negatives,
        "negative_sampling": sampling,
        "metric": "test ndcg@10",
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Sampled vs full softmax ({result['config']}, {result['seeds']} seeds)",
        "",
        f"Sampled: the batch's own items + {result['negatives']} shared negatives drawn by "
        f"{result['negative_sampling']}, logQ-corrected. Ratio: sampled / full test NDCG@10, "
        "paired bootstrap 95% over users (all seeds of each drawn user).",
        "",
        "| model | full | sampled | ratio [95%] | valid full / sampled | goal |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        q = r["ratio"]
        lines.append(
            f"| {r['stage']} | {r['full']['mean']:.4f} ± {r['full']['std']:.4f} "
            f"| {r['sampled']['mean']:.4f} ± {r['sampled']['std']:.4f} "
            f"| {q['ratio']:.3f} [{q['low']:.3f}, {q['high']:.3f}] "
            f"| {r['valid_full']['mean']:.4f} / {r['valid_sampled']['mean']:.4f} "
            f"| ≥ {r['goal']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--negatives", type=int, default=256, help="train.num_negatives of the sampled runs"
    )
    p.add_argument("--sampling", choices=["uniform", "popularity"], default="popularity")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--aggregate-only", action="store_true")
    p.add_argument("--n-boot", type=int, default=2000)
    args = p.parse_args(argv)
    if not args.aggregate_only:
        for name, overrides in variants(args.negatives, args.sampling).items():
            train_seeds(args.config, args.seeds, args.out / name, overrides, args.processes)
    result = aggregate(args.out, args.seeds, args.negatives, args.sampling, args.n_boot)
    result["config"] = args.config
    write_result(args.out / "sampled.json", result)
    (args.out / "sampled.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
