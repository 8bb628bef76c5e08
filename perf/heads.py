"""The heads' numbers on ML-1M -> ML-100K: the joint-heads demo (configs/demo_heads.yaml)
beside the retrieval-only demo (configs/demo.yaml), both over seeds, on the same split.

    python perf/quality.py --config configs/demo_heads.yaml --seeds 3 --out runs/heads/joint
    python perf/quality.py --config configs/demo.yaml --seeds 3 --out runs/heads/retrieval
    python perf/heads.py --joint runs/heads/joint --retrieval runs/heads/retrieval \
        --out perf/results/heads

Writes <out>/heads.json, heads.md and heads.png, and keeps each seed's metrics.json,
config.yaml, report.md, ranks.parquet and heads.parquet under <out>/{joint,retrieval}/.
Every ratio comes with a paired bootstrap 95% interval over users (each drawn user with
all its seeds): RMSE from per-user squared errors, GAUC from per-user AUCs, NDCG@10 from
per-user ranks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distrec.eval.bootstrap import bootstrap_ratio, paired_sums, read_ranks, select_stage
from distrec.utils.plotting import pyplot, save_figure
from perf.common import write_result

KEPT = ("metrics.json", "config.yaml", "report.md", "ranks.parquet", "heads.parquet")
STAGES = [
    ("adapt", "adapted (auto)"),
    ("adapt_lora", "  LoRA adapter"),
    ("adapt_full", "  full fine-tuning"),
    ("zero_shot", "zero-shot"),
    ("baseline_text_target_only", "target-only text"),
    ("baseline_id_target_only", "target-only ID"),
    ("baseline_popularity", "popularity"),
    ("baseline_item_mean", "item-mean rating"),
    ("baseline_global_mean", "global-mean rating"),
    ("pretrain", "pretraining (ML-1M)"),
]
HEAD_METRICS = ["rmse", "mae", "auc", "gauc", "logloss", "ndcg@10"]
BEYOND = ["coverage@10", "novelty@10", "ild@10", "ild_category@10", "arp@10"]


def seeds_of(run: Path) -> list[int]:
    """Seeds with a finished run (seed-<s>/metrics.json) under `run`."""
    found = [p.parent.name.removeprefix("seed-") for p in run.glob("seed-*/metrics.json")]
    seeds = sorted(int(s) for s in found if s.isdigit())
    if not seeds:
        raise FileNotFoundError(f"{run}: no seed-*/metrics.json; train the seeds first")
    return seeds


def stage_records(run: Path, seeds: list[int]) -> dict[int, dict]:
    """seed -> its stage records."""
    return {
        s: json.loads((run / f"seed-{s}" / "metrics.json").read_text())["stages"] for s in seeds
    }


def summary(records: dict[int, dict], metrics: list[str]) -> dict:
    """stage -> metric -> mean, std and per-seed values (test split), where every seed has it."""
    out = {}
    for stage, _ in STAGES:
        if not all(stage in r for r in records.values()):
            continue
        row = {}
        for m in metrics:
            values = [r[stage]["test"].get(m) for r in records.values()]
            if all(v is not None for v in values):
                std = float(np.std(values, ddof=1)) if len(values) > 1 else None
                row[m] = {"mean": float(np.mean(values)), "std": std, "values": values}
        out[stage] = row
    return out


def head_rows(run: Path, seeds: list[int], stage: str) -> pd.DataFrame:
    """Test rows of `stage` from every seed's heads.parquet, with a seed column."""
    parts = []
    for s in seeds:
        frame = pd.read_parquet(run / f"seed-{s}" / "heads.parquet")
        parts.append(frame[(frame["stage"] == stage) & (frame["split"] == "test")].assign(seed=s))
    return pd.concat(parts, ignore_index=True)


def per_user_sums(a: pd.DataFrame, b: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's `column` summed over seeds per user, for the (seed, user) pairs both have."""
    pairs = a[["seed", "user", column]].merge(b[["seed", "user", column]], on=["seed", "user"])
    per_user = pairs.groupby("user")[[f"{column}_x", f"{column}_y"]].sum()
    return per_user[f"{column}_x"].to_numpy(), per_user[f"{column}_y"].to_numpy()


def interval(ratio, transform=lambda x: x) -> dict:
    """A RatioInterval as a dict, its bounds passed through `transform` (sqrt for RMSE)."""
    return {
        "ratio": transform(ratio.ratio),
        "low": transform(ratio.low),
        "high": transform(ratio.high),
        "users": ratio.n_users,
    }


def rmse_ratio(run: Path, seeds: list[int], a: str, b: str, n_boot: int) -> dict:
    """RMSE(a) / RMSE(b) on the test users both judged, paired bootstrap over users."""
    left, right = head_rows(run, seeds, a), head_rows(run, seeds, b)
    for frame in (left, right):
        frame["sq"] = (frame["rating_pred"] - frame["rating"]) ** 2
    sa, sb = per_user_sums(left, right, "sq")
    found = bootstrap_ratio(sa, sb, n_seeds=len(seeds), n_boot=n_boot)
    return {"name": f"RMSE {a} / {b}", **interval(found, np.sqrt)}


def gauc_ratio(run: Path, seeds: list[int], a: str, b: str, n_boot: int) -> dict:
    """GAUC(a) / GAUC(b) on the same held-out items and negatives, paired over users."""
    sa, sb = per_user_sums(head_rows(run, seeds, a), head_rows(run, seeds, b), "ctr_auc")
    found = bootstrap_ratio(sa, sb, n_seeds=len(seeds), n_boot=n_boot)
    return {"name": f"GAUC {a} / {b}", **interval(found)}


def ndcg_ratio(joint: Path, retrieval: Path, seeds: list[int], stage: str, n_boot: int) -> dict:
    """NDCG@10 of `stage` trained jointly / trained for retrieval alone, same seeds and users."""
    frames = []
    for run in (joint, retrieval):
        parts = [
            select_stage(read_ranks(run / f"seed-{s}" / "ranks.parquet"), stage, "test").assign(
                seed=s
            )
            for s in seeds
        ]
        frames.append(pd.concat(parts, ignore_index=True))
    sa, sb, n_seeds = paired_sums(*frames, "ndcg@10")
    found = bootstrap_ratio(sa, sb, n_seeds=n_seeds, n_boot=n_boot)
    return {"name": f"NDCG@10 {stage}: joint / retrieval alone", **interval(found)}


def ratios(joint: Path, retrieval: Path, seeds: dict[str, list[int]], n_boot: int) -> list[dict]:
    """Every ratio the issue's goals are read from."""
    js = seeds["joint"]
    out = [
        rmse_ratio(joint, js, "adapt", "baseline_item_mean", n_boot),
        rmse_ratio(joint, js, "adapt", "baseline_id_target_only", n_boot),
        rmse_ratio(joint, js, "adapt", "baseline_text_target_only", n_boot),
        rmse_ratio(joint, js, "baseline_id_target_only", "baseline_item_mean", n_boot),
        gauc_ratio(joint, js, "adapt", "baseline_popularity", n_boot),
    ]
    common = sorted(set(js) & set(seeds["retrieval"]))
    for stage in ("adapt", "baseline_id_target_only", "pretrain"):
        out.append(ndcg_ratio(joint, retrieval, common, stage, n_boot))
    return out


def keep_artefacts(run: Path, seeds: list[int], out: Path) -> None:
    """Each seed's compact results (no checkpoints, no exports) under `out`."""
    for s in seeds:
        (out / f"seed-{s}").mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (run / f"seed-{s}" / name).exists():
                shutil.copy2(run / f"seed-{s}" / name, out / f"seed-{s}" / name)


def cell(stat: dict | None) -> str:
    """`mean ± std` (or the mean alone for one seed); empty when missing."""
    if stat is None:
        return ""
    std = f" ± {stat['std']:.4f}" if stat["std"] is not None else ""
    return f"{stat['mean']:.4f}{std}"


def table(rows: dict, metrics: list[str], title: str) -> list[str]:
    """A Markdown table of `rows` (stage -> metric -> stat) over `metrics`."""
    labels = dict(STAGES)
    lines = [title, "", "| stage | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for stage, stats in rows.items():
        if any(m in stats for m in metrics):
            lines.append(
                f"| {labels[stage]} | " + " | ".join(cell(stats.get(m)) for m in metrics) + " |"
            )
    return lines


def markdown(result: dict) -> str:
    """heads.md: the tables, the ratios with intervals, and how they were made."""
    lines = [
        "# Heads on ML-1M -> ML-100K",
        "",
        f"Joint heads `{result['joint_config']}` (seeds {result['seeds']['joint']}) and "
        f"retrieval alone `{result['retrieval_config']}` (seeds {result['seeds']['retrieval']}); "
        "test split, mean ± sample std over seeds. CTR metrics judge each held-out item "
        "against 20 fixed sampled negatives per user (the same for every stage and baseline).",
        "",
        *table(
            result["joint"], HEAD_METRICS, "## Joint heads (retrieval 1.0 + rating 0.2 + ctr 0.2)"
        ),
        "",
        *table(result["retrieval"], ["ndcg@10", "recall@10"], "## Retrieval alone"),
        "",
        "## Ratios (paired bootstrap 95% over users, all seeds of each drawn user)",
        "",
        "| ratio | value | 95% interval | users |",
        "|---|---|---|---|",
    ]
    for r in result["ratios"]:
        lines.append(
            f"| {r['name']} | {r['ratio']:.4f} | [{r['low']:.4f}, {r['high']:.4f}] | {r['users']} |"
        )
    lines += [
        "",
        *table(
            result["joint_beyond"],
            BEYOND,
            "## Beyond accuracy, joint heads (popularity's coverage is the floor)",
        ),
        "",
        *table(result["retrieval_beyond"], BEYOND, "## Beyond accuracy, retrieval alone"),
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> str:
    """heads.png: test RMSE and GAUC per stage of the joint run (mean ± std)."""
    labels = dict(STAGES)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, metric in zip(axes, ("rmse", "gauc"), strict=True):
        rows = [(labels[s], v[metric]) for s, v in result["joint"].items() if metric in v]
        names, stats = [n for n, _ in rows], [st for _, st in rows]
        ax.barh(
            names[::-1],
            [st["mean"] for st in stats][::-1],
            xerr=[st["std"] or 0.0 for st in stats][::-1],
            color="#4477aa",
            capsize=4,
        )
        ax.set(title=f"test {metric.upper()} (joint heads)", xlabel=metric.upper())
        ax.set_xlim(min(st["mean"] for st in stats) * 0.9, max(st["mean"] for st in stats) * 1.03)
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    """Aggregate the two sets of seed runs into heads.json/md/png."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--joint", type=Path, required=True, help="seed-*/ runs of configs/demo_heads.yaml"
    )
    p.add_argument(
        "--retrieval", type=Path, required=True, help="seed-*/ runs of configs/demo.yaml"
    )
    p.add_argument("--out", type=Path, required=True, help="where heads.* and the seed results go")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    args = p.parse_args(argv)
    seeds = {"joint": seeds_of(args.joint), "retrieval": seeds_of(args.retrieval)}
    joint, retrieval = (
        stage_records(args.joint, seeds["joint"]),
        stage_records(args.retrieval, seeds["retrieval"]),
    )
    result = {
        "joint_config": "configs/demo_heads.yaml",
        "retrieval_config": "configs/demo.yaml",
        "seeds": seeds,
        "joint": summary(joint, [*HEAD_METRICS, "recall@10"]),
        "retrieval": summary(retrieval, ["ndcg@10", "recall@10"]),
        "joint_beyond": summary(joint, BEYOND),
        "retrieval_beyond": summary(retrieval, BEYOND),
        "ratios": ratios(args.joint, args.retrieval, seeds, args.n_boot),
        "bootstrap": {"n_boot": args.n_boot, "level": 0.95, "unit": "user, with all its seeds"},
    }
    for name, run in (("joint", args.joint), ("retrieval", args.retrieval)):
        keep_artefacts(run, seeds[name], args.out / name)
    write_result(args.out / "heads.json", result)
    (args.out / "heads.md").write_text(markdown(result))
    plot(result, args.out / "heads.png")
    print((args.out / "heads.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
