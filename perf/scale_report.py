"""perf/bench_scale.py's report: fitted growth exponents (slope of log cost on log size),
the markdown tables and the PNG, from the parts it wrote (train/eval/infer/prep.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def growth_exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(cost) on log(size)."""
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def fits(result: dict) -> dict:
    out = {}
    train = result.get("train", [])
    for loss in ("full", "sampled"):
        pts = [(r["items"], r["step_s_median"]) for r in train if r["loss"] == loss]
        big = [p for p in pts if p[0] >= 10_000]
        out[f"train_step_{loss}_exponent_1e4_1e6"] = growth_exponent(big)
        fast = [(r["items"], r["step_s_fastest"]) for r in train if r["loss"] == loss]
        out[f"train_step_{loss}_exponent_1e4_1e6_fastest"] = growth_exponent(
            [p for p in fast if p[0] >= 10_000]
        )
    for ranks in (1, 2):
        pts = [
            (r["items"], 1.0 / r["users_per_s"])
            for r in result.get("eval", [])
            if r["ranks"] == ranks
        ]
        out[f"eval_seconds_per_user_exponent_{ranks}_ranks"] = growth_exponent(pts)
    prep = result.get("prep", [])
    for engine, workers in sorted({(r["engine"], r.get("workers", 1)) for r in prep}):
        pts = [
            (r["interactions"], r["seconds"])
            for r in prep
            if (r["engine"], r.get("workers", 1)) == (engine, workers)
        ]
        out[f"prep_seconds_exponent_{engine}_{workers}_workers"] = growth_exponent(pts)
    return out


def load_parts(out: Path) -> dict:
    result = {}
    for part in ("train", "eval", "infer", "prep"):
        path = out / f"{part}.json"
        if path.exists():
            found = json.loads(path.read_text())
            result[part] = found["runs"] if part == "prep" else found["rows"]
    return result


def markdown(result: dict) -> str:
    lines = ["# Cost curves at scale (synthetic domains, generated item features)", ""]
    for part, section in (
        ("train", train_section),
        ("eval", eval_section),
        ("infer", infer_section),
        ("prep", prep_section),
    ):
        if result.get(part):
            lines += section(result[part], result["fits"])
    lines += ["## Fitted growth exponents", "", "| curve | exponent |", "|---|---|"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in result["fits"].items()]
    return "\n".join(lines) + "\n"


def train_section(rows: list[dict], f: dict) -> list[str]:
    lines = [
        "## Training step vs catalog size (cached, batch 16 x 20 positions)",
        "",
        "| items | loss | step s (median) | step s (fastest) | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['items']:,} | {r['loss']} | {r['step_s_median']:.4f} | "
            f"{r['step_s_fastest']:.4f} | {r['peak_rss_mib']:.0f} |"
        )
    return [
        *lines,
        "",
        f"Growth exponent 10^4..10^6 (median): full {fmt(f['train_step_full_exponent_1e4_1e6'])}, "
        f"sampled {fmt(f['train_step_sampled_exponent_1e4_1e6'])} (goal <= 0.2); fastest "
        f"window: full {fmt(f['train_step_full_exponent_1e4_1e6_fastest'])}, sampled "
        f"{fmt(f['train_step_sampled_exponent_1e4_1e6_fastest'])}.",
        "",
    ]


def eval_section(rows: list[dict], f: dict) -> list[str]:
    lines = [
        "## Evaluation vs catalog size: 1 process (replicated) vs 2 ranks (sharded)",
        "",
        "| items | ranks | users | users/s | peak RSS MiB per rank | ratio to 1 process "
        "| metrics equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r.get("peak_ratio_to_one_process")
        lines.append(
            f"| {r['items']:,} | {r['ranks']} | {r['users']} | {r['users_per_s']:.1f} | "
            f"{', '.join(f'{m:.0f}' for m in r['peak_rss_mib_per_rank'])} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | "
            f"{r.get('metrics_equal_one_process', '')} |"
        )
    return [*lines, ""]


def infer_section(rows: list[dict], f: dict) -> list[str]:
    r = rows[0]
    return [
        "## Batch inference",
        "",
        f"{r['users']:,} users x {r['items']:,} items on 2 ranks: "
        f"{r['seconds_with_start_up']:.0f} s with start-up ({r['users_per_s']:.0f} users/s), "
        f"{r['rows']:,} rows for {r['users_written']:,} users; top-10 equal to `distrec "
        f"recommend` for {r['sampled_users_equal_to_recommend']}/{r['sampled_users']} sampled "
        "users.",
        "",
    ]


def prep_section(rows: list[dict], f: dict) -> list[str]:
    lines = [
        "## Preparation vs interactions",
        "",
        "| engine | workers | interactions | seconds | rows/s | driver peak MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r.get('workers', '')} | {r['interactions']:,} | "
            f"{r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['driver_peak_rss_mib']:.0f} |"
        )
    return [*lines, ""]


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def plot(result: dict, path: Path) -> None:
    from distrec.utils.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for loss, style in (("full", "o-"), ("sampled", "s-")):
        rows = [r for r in result.get("train", []) if r["loss"] == loss]
        axes[0].loglog(
            [r["items"] for r in rows], [r["step_s_median"] for r in rows], style, label=loss
        )
    axes[0].set(xlabel="catalog items", ylabel="step seconds (median)", title="training step")
    axes[0].legend()
    for ranks, style in ((1, "o-"), (2, "s-")):
        rows = [r for r in result.get("eval", []) if r["ranks"] == ranks]
        label = "1 process, replicated" if ranks == 1 else "2 ranks, sharded"
        axes[1].loglog(
            [r["items"] for r in rows],
            [max(r["peak_rss_mib_per_rank"]) for r in rows],
            style,
            label=label,
        )
    axes[1].set(xlabel="catalog items", ylabel="peak RSS per rank (MiB)", title="evaluation memory")
    axes[1].legend()
    prep = result.get("prep", [])
    for key in sorted({(r["engine"], r.get("workers")) for r in prep}):
        rows = [r for r in prep if (r["engine"], r.get("workers")) == key]
        axes[2].loglog(
            [r["interactions"] for r in rows],
            [r["seconds"] for r in rows],
            "o-",
            label=f"{key[0]} x{key[1]}",
        )
    axes[2].set(xlabel="interactions", ylabel="seconds", title="preparation")
    if prep:
        axes[2].legend()
    save_figure(fig, path)
