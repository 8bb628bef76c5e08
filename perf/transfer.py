"""The transfer techniques' ablations on ML-1M -> ML-100K, over seeds, on one split.

    python perf/transfer.py train --runs runs/transfer [--seeds 3]
    python perf/transfer.py distill-again --runs runs/transfer [--seeds 3]
    python perf/transfer.py serving --runs runs/transfer [--repeats 10]
    python perf/transfer.py report --runs runs/transfer --baseline perf/results/heads/retrieval \
        --out perf/results/transfer

`train` runs every variant (perf/quality.py's launcher: 2 CPU processes, a seed that already
finished is skipped, so an interrupted measurement resumes):

- `adversarial`: configs/demo.yaml's pretraining and zero-shot with model.domain_adversarial;
- `unaligned`: the same without it (its zero-shot equals the demo's; its domain probe is the
  unaligned accuracy);
- `kg_distill`: configs/transfer/kg_distill.yaml, the demo with knowledge-graph fusion, whose
  adapted model then teaches an ID-only student (and the same student learns alone).

`distill-again` retrains only the distill stage of each kg_distill seed with other settings
(SETTINGS: T 1; alpha 3; both students on 30% of the users), into
runs/transfer/kd_<name>/. `serving` re-times each seed's teacher and students from their exports in one process,
interleaved, on a machine left alone (runs/transfer/serving.json; the in-run figures are
timed while the run's other rank works). `report` compares each with its paired run: adversarial vs unaligned zero-shot, KG-fused vs
the demo's adapted model (`--baseline`: perf/quality.py's seed runs of configs/demo.yaml,
the same seeds), and the student vs its teacher and vs itself alone. Every NDCG ratio has a
paired bootstrap 95% interval over users (each drawn user with all its seeds). Writes
<out>/transfer.json, transfer.md and transfer.png, and each seed's metrics.json,
config.yaml, report.md and ranks.parquet under <out>/<variant>/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distrec.eval.bootstrap import bootstrap_ratio, paired_sums, read_ranks, select_stage
from distrec.utils.plotting import pyplot, save_figure
from perf.common import write_result
from perf.heads import interval, seeds_of, stage_records
from perf.quality import train_seeds

DEMO = "configs/demo.yaml"
ZERO_SHOT_ONLY = ["stages.adapt.enabled=false", "stages.baselines=[]"]
ADVERSARIAL = "model.domain_adversarial={weight: 1.0, on: item, schedule: dann}"
VARIANTS = {
    "adversarial": (DEMO, [ADVERSARIAL, *ZERO_SHOT_ONLY]),
    "unaligned": (DEMO, ZERO_SHOT_ONLY),
    "kg_distill": ("configs/transfer/kg_distill.yaml", []),
}
KEPT = ("metrics.json", "config.yaml", "report.md", "ranks.parquet")
METRICS = ["ndcg@10", "recall@10", "coverage@10"]
GOALS = {"student_share": 0.95, "params_share": 0.25, "speedup": 4.0, "probe": 0.60}


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


def cell(stat: dict, digits: int = 4) -> str:
    std = stat.get("std")
    return f"{stat['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def ratio_lines(ratios: list[dict]) -> list[str]:
    lines = ["| ratio | value | 95% interval |", "|---|---|---|"]
    for r in ratios:
        lines.append(f"| {r['name']} | {r['ratio']:.3f} | [{r['low']:.3f}, {r['high']:.3f}] |")
    return lines


def metric_table(rows: dict[str, dict]) -> list[str]:
    lines = ["| model | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for label, stats in rows.items():
        cells = (cell(stats[m]) if m in stats else "" for m in METRICS)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def distill_lines(d: dict) -> list[str]:
    """The distillation section: metrics, serving cost and ratios."""
    sv = d["serving"]
    lines = [
        "## Knowledge distillation (teacher: the KG run's adapted model; student: ID-only, "
        "dim 64, 1 layer)",
        "",
        *metric_table(
            {
                "teacher (adapt)": d["teacher"],
                "student, distilled": d["student"],
                "student alone": d["student_alone"],
            }
        ),
        "",
        "| model | target parameters | users/s at inference (in-run, fastest repeat) | × teacher (fastest) "
        "| × teacher (median) |",
        "|---|---|---|---|---|",
        f"| teacher | {sv['teacher']['params']:.0f} | {cell(sv['teacher']['users_per_s'], 0)} | 1 | 1 |",
    ]
    for stage, label in (("distill", "student, distilled"), ("distill_alone", "student alone")):
        s = sv[stage]
        lines.append(
            f"| {label} | {s['params']:.0f} ({s['params'] / sv['teacher']['params']:.1%}) | "
            f"{cell(s['users_per_s'], 0)} | {cell(s['speedup'], 2)} | {cell(s['speedup_median'], 2)} |"
        )
    return [*lines, "", *ratio_lines(d["ratios"]), ""]


def settings_lines(settings: dict) -> list[str]:
    """The distillation settings' table (valid NDCG@10 is what chooses)."""
    if len(settings) < 2:
        return []
    lines = [
        "Distillation settings (the distill stage retrained on each seed's run; "
        "`perf/transfer.py distill-again`; the default is alpha 1, T 2):",
        "",
        "| setting | valid NDCG@10 | test NDCG@10 | student alone (test) | test / student alone "
        "| test / teacher |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in settings.items():
        label = name
        if name != "default":
            label += f" (alpha {v['alpha']}, T {v['temperature']}, users {v['train_fraction']})"
        ratios = [
            f"{r['ratio']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for r in v.get("ratios", [])
        ]
        ratios = ratios or ["(above)", "(above)"]
        alone = cell(v["alone"]["test"]) if "alone" in v else "(above)"
        lines.append(
            f"| {label} | {cell(v['valid'])} | {cell(v['test'])} | {alone} | {ratios[0]} | "
            f"{ratios[1]} |"
        )
    return [*lines, ""]


def serving_lines(bench: dict | None) -> list[str]:
    """The serving benchmark's table (empty when it was not run)."""
    if bench is None:
        return []
    lines = [
        f"Serving benchmark (`perf/transfer.py serving`: {bench['processes']} process, "
        f"{bench['repeats']} interleaved rounds, top-10 for every test user):",
        "",
        "| model | users/s (fastest) | users/s (median) | × teacher (fastest) | × teacher (median) |",
        "|---|---|---|---|---|",
    ]
    for name in ("teacher", "distill", "distill_alone"):
        b = bench[name]
        speed = [cell(b[k], 2) if k in b else "1" for k in ("speedup", "speedup_median")]
        lines.append(
            f"| {name} | {cell(b['users_per_s'], 0)} | {cell(b['users_per_s_median'], 0)} | "
            f"{speed[0]} | {speed[1]} |"
        )
    return [*lines, ""]


def alignment_lines(a: dict) -> list[str]:
    """The alignment section: the critic per epoch, the probes, zero-shot with and without."""
    epochs = ", ".join(f"{e['mean']:.3f}" for e in a["critic_accuracy_per_epoch"])
    return [
        "## Domain-adversarial alignment (pretraining; item content vectors)",
        "",
        f"- Co-trained critic's balanced accuracy on held-out items, per epoch: {epochs}",
        f"- A fresh probe on the final base's held-out items: aligned "
        f"{cell(a['probe_aligned'])}, unaligned {cell(a['probe_unaligned'])} (chance 0.5)",
        "",
        *metric_table(
            {
                "zero-shot, aligned": a["zero_shot"]["aligned"],
                "zero-shot, unaligned": a["zero_shot"]["unaligned"],
                "pretraining (ML-1M), aligned": a["pretrain"]["aligned"],
                "pretraining (ML-1M), unaligned": a["pretrain"]["unaligned"],
            }
        ),
        "",
        *ratio_lines(a["ratios"]),
        "",
    ]


def kg_lines(k: dict) -> list[str]:
    """The knowledge-graph section: stages with and without the graph."""
    rows = {
        **{f"{s}, with KG": v for s, v in k["with_kg"].items()},
        **{f"{s}, without KG": v for s, v in k["without_kg"].items()},
    }
    return [
        "## Knowledge-graph fusion (genres and years as shared entities)",
        "",
        *metric_table(rows),
        "",
        *ratio_lines(k["ratios"]),
    ]


def markdown(result: dict) -> str:
    """transfer.md: one section per technique."""
    lines = [
        "# Transfer techniques on ML-1M -> ML-100K (test split, mean ± std over seeds)",
        "",
        f"Seeds {result['seeds']}; 2 CPU processes; intervals: paired bootstrap 95% over users "
        "(every seed of a drawn user). Commands: perf/transfer.py's docstring.",
        "",
        *distill_lines(result["distillation"]),
        *serving_lines(result.get("serving_benchmark")),
        *settings_lines(result.get("distill_settings", {})),
        *alignment_lines(result["alignment"]),
        *kg_lines(result["knowledge_graph"]),
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> str:
    """transfer.png: the critic's accuracy per epoch with the probes, the student vs its
    teacher, and the adapted model with and without the graph."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    a = result["alignment"]
    per_epoch = a["critic_accuracy_per_epoch"]
    xs = list(range(1, len(per_epoch) + 1))
    axes[0].plot(xs, [e["mean"] for e in per_epoch], marker="o", label="co-trained critic")
    for key, style, color in (
        ("probe_aligned", "-", "#228833"),
        ("probe_unaligned", "--", "#ee6677"),
    ):
        axes[0].axhline(a[key]["mean"], linestyle=style, color=color, label=key.replace("_", " "))
    axes[0].axhline(0.5, color="black", linewidth=0.5)
    axes[0].set(title="domain classifier (balanced acc.)", xlabel="pretraining epoch")
    axes[0].legend()
    zs = {k: a["zero_shot"][k]["ndcg@10"] for k in ("aligned", "unaligned")}
    axes[3].bar(
        list(zs),
        [v["mean"] for v in zs.values()],
        yerr=[v["std"] or 0 for v in zs.values()],
        capsize=4,
        color=["#228833", "#bbbbbb"],
    )
    axes[3].set(title="alignment: zero-shot test NDCG@10", ylabel="NDCG@10")
    d = result["distillation"]
    bars = {"teacher": d["teacher"], "distilled": d["student"], "alone": d["student_alone"]}
    axes[1].bar(
        list(bars),
        [b["ndcg@10"]["mean"] for b in bars.values()],
        yerr=[b["ndcg@10"]["std"] or 0 for b in bars.values()],
        capsize=4,
        color=["#4477aa", "#228833", "#bbbbbb"],
    )
    axes[1].set(title="distillation: test NDCG@10", ylabel="NDCG@10")
    k = result["knowledge_graph"]
    stages = list(k["with_kg"])
    x = np.arange(len(stages))
    for shift, key, color in ((-0.2, "with_kg", "#228833"), (0.2, "without_kg", "#bbbbbb")):
        axes[2].bar(
            x + shift,
            [k[key][s]["ndcg@10"]["mean"] for s in stages],
            0.4,
            yerr=[k[key][s]["ndcg@10"]["std"] or 0 for s in stages],
            capsize=3,
            color=color,
            label=key.replace("_", " "),
        )
    axes[2].set_xticks(x, stages)
    axes[2].set(title="knowledge graph: test NDCG@10")
    axes[2].legend()
    return save_figure(fig, path)


def serving(runs: Path, repeats: int) -> dict:
    """Re-time each kg_distill seed's teacher and students in one process, interleaved
    (`repeats` rounds), from their exports: the serving benchmark the report's speed-ups
    come from (the in-run figures are timed while the run's other ranks work)."""
    import json

    from distrec.train.inference import load_export, load_run
    from distrec.train.serving import serving_costs
    from distrec.train.stages.distill import load_weights, teacher_file

    run = runs / "kg_distill"
    found = {}
    for s in seeds_of(run):
        folder = run / f"seed-{s}"
        ws, _, target = load_run(folder, None)
        stages = json.loads((folder / "stages.json").read_text())
        teacher = stages["distill"]["teacher"]
        models = {
            "teacher": load_weights(ws, teacher_file(folder, target, stages[teacher], teacher)),
            "distill": load_export(ws, target, "distill"),
            "distill_alone": load_export(ws, target, "distill_alone"),
        }
        found[s] = serving_costs(ws, models, repeats)
    result = {"repeats": repeats, "processes": 1, "seeds": found}
    write_result(runs / "serving.json", result)
    return result


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


# Other distillation settings; `few` gives both students 30% of the target's users (the
# teacher was adapted on all of them), with its own student-alone control.
SETTINGS = {
    "t1": ["stages.distill.temperature=1.0", "stages.distill.control=false"],
    "a3": ["stages.distill.alpha=3.0", "stages.distill.control=false"],
    "few": ["stages.distill.train_fraction=0.3"],
}
KEEP_FOR_DISTILL = ("export", "adapters", "ranks", "config.yaml")


def distill_again(runs: Path, seeds: int) -> None:
    """Each SETTINGS entry's distill stage on each finished kg_distill seed: the run folder is
    copied without checkpoints and distill records and resumed, so only the distill stage
    trains (the same teacher export and seed)."""
    import json
    import os
    import subprocess

    from perf.quality import LAUNCH_ENV, LAUNCHER

    for name, overrides in SETTINGS.items():
        for s in range(seeds):
            src, dst = runs / "kg_distill" / f"seed-{s}", runs / f"kd_{name}" / f"seed-{s}"
            if (dst / "metrics.json").exists() or not (src / "metrics.json").exists():
                continue
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            for part in KEEP_FOR_DISTILL:
                copy = shutil.copytree if (src / part).is_dir() else shutil.copy2
                copy(src / part, dst / part)
            for stale in dst.glob("export/*-distill*"):
                shutil.rmtree(stale)
            stages = json.loads((src / "stages.json").read_text())
            kept = {k: v for k, v in stages.items() if not k.startswith("distill")}
            (dst / "stages.json").write_text(json.dumps(kept, indent=2))
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
            cmd += [str(LAUNCHER), "--num_processes", "2", "-m", "distrec.train"]
            cmd += ["--config", str(dst / "config.yaml"), "--resume", "auto"]
            cmd += [f"output.dir={dst}", *overrides]
            subprocess.run(cmd, env={**os.environ, **LAUNCH_ENV}, check=True)


def train(runs: Path, seeds: int) -> None:
    """Every variant's seeds (finished ones skipped)."""
    for name, (config, overrides) in VARIANTS.items():
        train_seeds(config, seeds, runs / name, overrides, processes=2)


def report(runs: Path, baseline: Path, out: Path, n_boot: int) -> dict:
    """Aggregate the variants' seeds (those every variant finished) into transfer.*."""
    found = [set(seeds_of(runs / v)) for v in VARIANTS] + [set(seeds_of(baseline))]
    seeds = sorted(set.intersection(*found))
    result = {
        "variants": {n: {"config": c, "overrides": o} for n, (c, o) in VARIANTS.items()},
        "baseline": str(baseline),
        "seeds": seeds,
        "goals": GOALS,
        "distillation": distillation(runs / "kg_distill", seeds, n_boot),
        "distill_settings": distill_settings(runs, seeds, n_boot),
        "serving_benchmark": serving_summary(json.loads(bench.read_text()))
        if (bench := runs / "serving.json").exists()
        else None,
        "alignment": alignment(runs / "adversarial", runs / "unaligned", seeds, n_boot),
        "knowledge_graph": knowledge_graph(runs / "kg_distill", baseline, seeds, n_boot),
        "bootstrap": {"n_boot": n_boot, "level": 0.95, "unit": "user, with all its seeds"},
    }
    for name in VARIANTS:
        keep_artefacts(runs / name, seeds, out / name)
    write_result(out / "transfer.json", result)
    (out / "transfer.md").write_text(markdown(result))
    plot(result, out / "transfer.png")
    return result


def main(argv: list[str] | None = None) -> int:
    """`train` the variants or `report` on them."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("command", choices=["train", "distill-again", "serving", "report"])
    p.add_argument("--runs", type=Path, default=Path("runs/transfer"), help="variant seed runs")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (train)")
    p.add_argument(
        "--baseline",
        type=Path,
        default=Path("perf/results/heads/retrieval"),
        help="seed runs of configs/demo.yaml with beyond-accuracy metrics (the without-KG rows)",
    )
    p.add_argument("--out", type=Path, default=Path("perf/results/transfer"), help="report folder")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--repeats", type=int, default=10, help="timing rounds (serving)")
    args = p.parse_args(argv)
    if args.command == "train":
        train(args.runs, args.seeds)
        return 0
    if args.command == "distill-again":
        distill_again(args.runs, args.seeds)
        return 0
    if args.command == "serving":
        serving(args.runs, args.repeats)
        return 0
    report(args.runs, args.baseline, args.out, args.n_boot)
    print((args.out / "transfer.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
