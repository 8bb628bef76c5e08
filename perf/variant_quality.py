"""Does a speed option change quality? One config trained over seeds twice, as variant A
and as variant B (each a list of overrides), compared stage by stage on the same users with
paired bootstrap intervals (distrec.eval.bootstrap.paired_ratio: the user is the resampling
unit, all seeds of a drawn user go together).

    python -m perf.variant_quality --config configs/lora_end_to_end.yaml --seeds 3 \
        --a "" --b "model.lm_dropout=0.0 peft.dropout=0.0" \
        --out perf/results/quality/dropout [--processes 1] [--stages zero_shot,adapt]

Seeds train into <out>/a/seed-<s> and <out>/b/seed-<s> through perf/quality.py's launcher,
seed by seed (A then B), finished seeds skipped, so an interrupted measurement resumes and
`--aggregate-only` compares the seeds both variants finished. Writes
<out>/variant_quality.json and .md: per stage and split, each variant's NDCG@10 mean +/- std
over seeds and the ratio B/A with its 95% interval; "unchanged" when the interval holds 1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distrec.eval.bootstrap import paired_ratio
from perf.common import write_result
from perf.quality import finished_seeds, mean_std, seed_record, seed_stage_ranks, train_seeds

SPLITS = ("valid", "test")
METRIC = "ndcg@10"


def compare(out: Path, stages: list[str], n_boot: int) -> tuple[list[dict], list[int]]:
    """One row per (stage, split) over the seeds both variants finished: each variant's metric
    over seeds and the paired B/A ratio; and those seeds."""
    common = sorted(set(finished_seeds(out / "a", None)) & set(finished_seeds(out / "b", None)))
    if not common:
        raise FileNotFoundError(f"{out}: no seed finished under both a/ and b/; train them first")
    records = {v: [seed_record(out / v, s) for s in common] for v in "ab"}
    rows = []
    for stage in stages:
        for split in SPLITS:
            ranks = {v: seed_stage_ranks(records[v], stage, split) for v in "ab"}
            ratio = paired_ratio(ranks["b"], ranks["a"], METRIC, n_boot=n_boot)
            rows.append(
                {
                    "stage": stage,
                    "split": split,
                    "a": mean_std([r["stages"][stage][split][METRIC] for r in records["a"]]),
                    "b": mean_std([r["stages"][stage][split][METRIC] for r in records["b"]]),
                    "ratio_b_over_a": ratio.ratio,
                    "interval": [ratio.low, ratio.high],
                    "unchanged": ratio.low <= 1.0 <= ratio.high,
                    "verdict": verdict(ratio.low, ratio.high),
                }
            )
    return rows, common


def verdict(low: float, high: float) -> str:
    """What the B/A interval says: unchanged (holds 1), B better or B worse."""
    if low > 1.0:
        return "B better"
    return "B worse" if high < 1.0 else "unchanged"


def markdown(result: dict) -> str:
    """The comparison as a table, with both variants' overrides."""
    lines = [
        f"# Variant quality: {result['config']}",
        "",
        f"- A: `{' '.join(result['a']) or '(the config as is)'}`",
        f"- B: `{' '.join(result['b'])}`",
        f"- seeds: {result['seeds']}; metric {METRIC}; paired bootstrap over users "
        f"({result['n_boot']} resamples, 95%)",
        "",
        "| stage | split | A | B | B/A | 95% interval | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        a, b = r["a"], r["b"]
        lines.append(
            f"| {r['stage']} | {r['split']} | {a['mean']:.4f} ± {a['std'] or 0:.4f} | "
            f"{b['mean']:.4f} ± {b['std'] or 0:.4f} | {r['ratio_b_over_a']:.3f} | "
            f"[{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] | "
            f"{r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Train both variants' seeds (unless --aggregate-only), compare, write JSON + markdown."""
    p = argparse.ArgumentParser(prog="python -m perf.variant_quality", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--a", default="", help="variant A's overrides (one shell-quoted string)")
    p.add_argument("--b", required=True, help="variant B's overrides")
    p.add_argument("--out", required=True)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--stages", default="zero_shot,adapt")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--aggregate-only", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    variants = {"a": shlex.split(args.a), "b": shlex.split(args.b)}
    if variants["a"] == variants["b"]:
        p.error("--a and --b are the same overrides: nothing to compare")
    if not args.aggregate_only:
        # Seed by seed, A then B: a measurement cut short still holds paired seeds.
        for seed in range(args.seeds):
            for name, overrides in variants.items():
                train_seeds(args.config, seed + 1, out / name, overrides, args.processes)
    result = {
        "benchmark": "variant_quality",
        "config": args.config,
        "seeds_asked": args.seeds,
        "n_boot": args.n_boot,
        **variants,
    }
    result["rows"], result["seeds"] = compare(out, args.stages.split(","), args.n_boot)
    write_result(out / "variant_quality.json", result)
    (out / "variant_quality.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
