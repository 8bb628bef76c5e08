"""perf/transfer.py's report: transfer.md (one section per technique) and transfer.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distrec.utils.plotting import pyplot, save_figure
from perf.transfer_results import METRICS


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
