"""perf/transfer.py's results: each technique's seed runs aggregated against its pair (means
over seeds, paired bootstrap NDCG@10 ratios over users), and the serving benchmark's summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from distrec.eval.bootstrap import bootstrap_ratio, paired_sums, read_ranks, select_stage
from perf.heads import interval, stage_records

KEPT = ("metrics.json", "config.yaml", "report.md", "ranks.parquet")
METRICS = ["ndcg@10", "recall@10", "coverage@10"]


def mean_std(values: list[float]) -> dict:
    """Mean, sample std and the values (over seeds)."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "values": [float(v) for v in values]}


def test_metrics(records: dict[int, dict], stage: str) -> dict:
    """metric -> mean/std over seeds of `stage`'s test split (the metrics every seed has)."""
    tests = [r[stage]["test"] for r in records.values()]
    return {m: mean_std([t[m] for t in tests]) for m in METRICS if all(m in t for t in tests)}


def stage_ranks(run: Path, seeds: list[int], stage: str, split: str) -> pd.DataFrame:
    """`stage`'s per-user ranks on `split` from every seed, with a seed column."""
    parts = [
        select_stage(read_ranks(run / f"seed-{s}" / "ranks.parquet"), stage, split).assign(seed=s)
        for s in seeds
    ]
    return pd.concat(parts, ignore_index=True)


def ndcg_ratio(a: tuple[Path, str], b: tuple[Path, str], seeds: list[int], n_boot: int) -> dict:
    """NDCG@10 of run/stage `a` over `b` on the test users both ranked, paired over users."""
    left, right = (stage_ranks(run, seeds, stage, "test") for run, stage in (a, b))
    sa, sb, n_seeds = paired_sums(left, right, "ndcg@10")
    found = bootstrap_ratio(sa, sb, n_seeds=n_seeds, n_boot=n_boot)
    return {"name": f"NDCG@10 {a[1]} ({a[0].name}) / {b[1]} ({b[0].name})", **interval(found)}


def distillation(run: Path, seeds: list[int], n_boot: int) -> dict:
    """Teacher, student and student alone: metrics, serving cost and the paired ratios."""
    records = stage_records(run, seeds)
    serving = {}
    for stage in ("distill", "distill_alone"):
        rows = [r[stage] for r in records.values()]
        serving[stage] = {
            "params": rows[0]["student"]["params"],
            "users_per_s": mean_std([x["student"]["users_per_s"] for x in rows]),
            "speedup": mean_std(
                [x["student"]["users_per_s"] / x["teacher_serving"]["users_per_s"] for x in rows]
            ),
            "speedup_median": mean_std(
                [
                    x["student"]["users_per_s_median"] / x["teacher_serving"]["users_per_s_median"]
                    for x in rows
                ]
            ),
        }
    teacher = [r["distill"]["teacher_serving"] for r in records.values()]
    serving["teacher"] = {
        "params": teacher[0]["params"],
        "users_per_s": mean_std([t["users_per_s"] for t in teacher]),
    }
    return {
        "teacher": test_metrics(records, "adapt"),
        "student": test_metrics(records, "distill"),
        "student_alone": test_metrics(records, "distill_alone"),
        "serving": serving,
        "params_share": serving["distill"]["params"] / serving["teacher"]["params"],
        "ratios": [
            ndcg_ratio((run, "distill"), (run, "adapt"), seeds, n_boot),
            ndcg_ratio((run, "distill"), (run, "distill_alone"), seeds, n_boot),
            ndcg_ratio((run, "distill_alone"), (run, "adapt"), seeds, n_boot),
        ],
    }


def distill_settings(runs: Path, seeds: list[int], n_boot: int) -> dict:
    """runs/transfer/kd_<name>/: the distill stage retrained with other settings on each
    seed's kg_distill run (`distill-again`), against the same student alone and the same
    teacher; a setting is chosen on validation, never on test."""
    base = runs / "kg_distill"
    found = {"default": {"overrides": [], **stage_summary(stage_records(base, seeds), "distill")}}
    for folder in sorted(runs.glob("kd_*")):
        have = [s for s in seeds if (folder / f"seed-{s}" / "metrics.json").exists()]
        if have != seeds:
            continue
        records = stage_records(folder, seeds)
        config = folder / f"seed-{seeds[0]}" / "config.yaml"
        dc = yaml.safe_load(config.read_text())["stages"]["distill"]
        # Against its own student alone when it trained one (other data), else the run's.
        alone = folder if "distill_alone" in records[seeds[0]] else base
        found[folder.name.removeprefix("kd_")] = {
            "alpha": dc["alpha"],
            "temperature": dc["temperature"],
            "train_fraction": dc["train_fraction"],
            **stage_summary(records, "distill"),
            "alone": stage_summary(stage_records(alone, seeds), "distill_alone"),
            "ratios": [
                ndcg_ratio((folder, "distill"), (alone, "distill_alone"), seeds, n_boot),
                ndcg_ratio((folder, "distill"), (base, "adapt"), seeds, n_boot),
            ],
        }
    return found


def stage_summary(records: dict[int, dict], stage: str) -> dict:
    """Valid and test NDCG@10 of `stage`, mean/std over seeds."""
    return {
        split: mean_std([r[stage][split]["ndcg@10"] for r in records.values()])
        for split in ("valid", "test")
    }


def alignment(aligned: Path, unaligned: Path, seeds: list[int], n_boot: int) -> dict:
    """The critic's accuracy per epoch, the fresh probe with and without alignment, and the
    zero-shot (and source) NDCG@10 with and without it."""
    a, u = stage_records(aligned, seeds), stage_records(unaligned, seeds)
    per_seed = [
        [h["domain_accuracy"] for h in r["pretrain"]["history"] if "domain_accuracy" in h]
        for r in a.values()
    ]
    # Seeds may early-stop at different epochs: each epoch over the seeds that reached it.
    longest = max(len(e) for e in per_seed)
    per_epoch = [[e[i] for e in per_seed if len(e) > i] for i in range(longest)]
    return {
        "critic_accuracy_per_epoch": [mean_std(values) for values in per_epoch],
        "probe_aligned": mean_std([r["pretrain"]["domain_probe"]["accuracy"] for r in a.values()]),
        "probe_unaligned": mean_std(
            [r["pretrain"]["domain_probe"]["accuracy"] for r in u.values()]
        ),
        "zero_shot": {
            "aligned": test_metrics(a, "zero_shot"),
            "unaligned": test_metrics(u, "zero_shot"),
        },
        "pretrain": {
            "aligned": test_metrics(a, "pretrain"),
            "unaligned": test_metrics(u, "pretrain"),
        },
        "ratios": [
            ndcg_ratio((aligned, "zero_shot"), (unaligned, "zero_shot"), seeds, n_boot),
            ndcg_ratio((aligned, "pretrain"), (unaligned, "pretrain"), seeds, n_boot),
        ],
    }


def knowledge_graph(fused: Path, plain: Path, seeds: list[int], n_boot: int) -> dict:
    """Adapted and zero-shot metrics (coverage included) with and without the graph."""
    f, p = stage_records(fused, seeds), stage_records(plain, seeds)
    stages = ("adapt", "adapt_lora", "adapt_full", "zero_shot")
    return {
        "with_kg": {s: test_metrics(f, s) for s in stages},
        "without_kg": {s: test_metrics(p, s) for s in stages},
        "ratios": [ndcg_ratio((fused, s), (plain, s), seeds, n_boot) for s in stages],
    }


def keep_artefacts(run: Path, seeds: list[int], out: Path) -> None:
    """Each seed's compact results (no checkpoints, no exports) under `out`."""
    for s in seeds:
        (out / f"seed-{s}").mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            src = run / f"seed-{s}" / name
            if src.exists():
                shutil.copy2(src, out / f"seed-{s}" / name)


def serving_summary(bench: dict) -> dict:
    """Mean/std over seeds of each model's users/s and of the students' speed-ups."""
    seeds = list(bench["seeds"].values())
    out = {}
    for name in ("teacher", "distill", "distill_alone"):
        out[name] = {
            key: mean_std([s[name][key] for s in seeds])
            for key in ("users_per_s", "users_per_s_median")
        }
        if name != "teacher":
            out[name]["speedup"] = mean_std(
                [s[name]["users_per_s"] / s["teacher"]["users_per_s"] for s in seeds]
            )
            out[name]["speedup_median"] = mean_std(
                [s[name]["users_per_s_median"] / s["teacher"]["users_per_s_median"] for s in seeds]
            )
    return {"repeats": bench["repeats"], "processes": bench["processes"], **out}
