"""What a sweep leaves for people: results.csv, best.yaml, sweep.png, summary.md.

results.csv has one row per trial: trial_id, status (completed | early_stopped | error),
epochs, best_<metric> (dots -> underscores, e.g. best_valid_ndcg@10), wall_s, then one
column per swept key. `completed` means the trial ran its stage to the end (its own
epoch budget or distrec's patience-based early stopping); `early_stopped` means the
scheduler (ASHA) stopped it.

best.yaml is the run config as the user wrote it with the best trial's values applied
and the tune section dropped; `distrec train --config best.yaml` retrains that trial.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distrec.config import RunConfig
from distrec.tune.space import Param, apply_params
from distrec.utils.plotting import pyplot, save_figure

STATUSES = ("completed", "early_stopped", "error")


@dataclass
class TrialRecord:
    """One trial as the results see it: its status (STATUSES), sampled params, per-epoch
    reports, wall time and last error line."""

    trial_id: str
    status: str
    params: dict[str, Any]
    history: list[dict] = field(default_factory=list)  # one dict per reported epoch
    wall_s: float = 0.0
    error: str | None = None

    @property
    def epochs(self) -> int:
        """The last epoch the trial reported (0 if none)."""
        return max((int(h["epoch"]) for h in self.history), default=0)

    def best(self, metric: str, mode: str) -> float:
        """The best finite `metric` over the reported epochs (max or min by `mode`); nan if none."""
        values = [h[metric] for h in self.history if _finite(h.get(metric))]
        if not values:
            return math.nan
        return max(values) if mode == "max" else min(values)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def records_from_grid(grid, metric: str) -> list[TrialRecord]:
    """Ray's ResultGrid as plain records (the only function here that knows Ray)."""
    records = []
    for result in grid:
        df = result.metrics_dataframe
        rows = [] if df is None or df.empty else df.to_dict("records")
        rows = [r for r in rows if "epoch" in r and _finite(r.get("epoch"))]
        last = result.metrics or {}
        if result.error is not None:
            status = "error"
        elif last.get("final"):
            status = "completed"
        else:
            status = "early_stopped"
        trial_id = last.get("trial_id") or Path(result.path).name
        records.append(
            TrialRecord(
                trial_id=str(trial_id),
                status=status,
                params=dict(result.config or {}),
                history=rows,
                wall_s=float(last.get("time_total_s", 0.0) or 0.0),
                error=str(result.error).strip().splitlines()[-1] if result.error else None,
            )
        )
    return sorted(records, key=lambda r: r.trial_id)


def best_column(metric: str) -> str:
    """The results column of `metric`'s best value: `valid.ndcg@10` -> `best_valid_ndcg@10`."""
    return "best_" + metric.replace(".", "_")


def ranked(records: list[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Best first; trials without a value last."""
    sign = -1.0 if mode == "max" else 1.0

    def key(r: TrialRecord) -> tuple:
        b = r.best(metric, mode)
        return (math.isnan(b), sign * b if not math.isnan(b) else 0.0, r.trial_id)

    return sorted(records, key=key)


def write_csv(path: Path, records: list[TrialRecord], params: list[Param], metric: str, mode: str):
    """results.csv: one row per trial, best first (columns in the module docstring)."""
    keys = [p.key for p in params]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "status", "epochs", best_column(metric), "wall_s", *keys])
        for r in ranked(records, metric, mode):
            b = r.best(metric, mode)
            w.writerow(
                [
                    r.trial_id,
                    r.status,
                    r.epochs,
                    "" if math.isnan(b) else f"{b:.6f}",
                    f"{r.wall_s:.1f}",
                    *(r.params.get(k, "") for k in keys),
                ]
            )


@dataclass(frozen=True)
class SweepFacts:
    """What every output of a finished sweep describes."""

    out_dir: Path  # the sweep folder (--out): the outputs are written here
    tree: dict  # the run-config tree as the user wrote it (overrides applied)
    params: list[Param]  # the swept keys
    cfg: RunConfig  # `tree` validated: tune.metric/mode/stage/scheduler/workers_per_trial
    threads: int  # torch threads every trial trained with


def best_config(sweep: SweepFacts, best: TrialRecord) -> str:
    """best.yaml's text: the user's tree + the best values, tune dropped, its own output.dir."""
    out_dir, threads, workers = sweep.out_dir, sweep.threads, sweep.cfg.tune.workers_per_trial
    metric, mode = sweep.cfg.tune.metric, sweep.cfg.tune.mode
    values = {k: v for k, v in best.params.items()}
    cfg_tree = apply_params(sweep.tree, values)
    cfg_tree.pop("tune", None)
    cfg_tree["train"] = {**cfg_tree.get("train", {}), "threads": threads}
    cfg_tree["output"] = {**cfg_tree.get("output", {}), "dir": str(out_dir / "best-run")}
    header = [
        f"# Best trial {best.trial_id} of the sweep in {out_dir}: {metric} = "
        f"{best.best(metric, mode):.6f} (epoch {_best_epoch(best, metric, mode)}).",
        "# Swept values: " + ", ".join(f"{k}={v!r}" for k, v in values.items()),
        f"# train.threads={threads} as in the trials (float sums depend on the thread count).",
        "# Run `distrec train --config <this file>` from the directory the sweep started in.",
    ]
    if workers > 1:
        header.append(
            f"# Trials ran {workers} processes each: retrain with the same number, e.g. "
            f"`accelerate launch --num_processes {workers} -m distrec.train --config <this file>`."
        )
    return "\n".join(header) + "\n" + yaml.safe_dump(cfg_tree, sort_keys=False)


def _best_epoch(r: TrialRecord, metric: str, mode: str) -> int:
    b = r.best(metric, mode)
    return next((int(h["epoch"]) for h in r.history if h.get(metric) == b), -1)


def summary_table(records: list[TrialRecord], params: list[Param], metric: str, mode: str) -> str:
    """summary.md's Markdown table: the results.csv columns, best first."""
    keys = [p.key for p in params]
    lines = [
        f"| trial | status | epochs | {best_column(metric)} | wall_s | " + " | ".join(keys) + " |",
        "|---|---|---|---|---|" + "---|" * len(keys),
    ]
    for r in ranked(records, metric, mode):
        b = r.best(metric, mode)
        vals = " | ".join(_fmt(r.params.get(k)) for k in keys)
        best = "-" if math.isnan(b) else f"{b:.4f}"
        lines.append(
            f"| {r.trial_id} | {r.status} | {r.epochs} | {best} | {r.wall_s:.0f} | {vals} |"
        )
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def counts(records: list[TrialRecord]) -> dict[str, int]:
    """Trials per status, every one of STATUSES present (0 if none)."""
    return {s: sum(r.status == s for r in records) for s in STATUSES}


def plot_sweep(path: Path, records: list[TrialRecord], params: list[Param], metric: str, mode: str):
    """Left: the metric per epoch for every trial; then one panel per swept key."""
    plt = pyplot()

    panels = 1 + len(params)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    flat = axes.ravel()
    colors = {"completed": "#228833", "early_stopped": "#ee6677", "error": "#bbbbbb"}
    for r in records:
        epochs = [h["epoch"] for h in r.history if _finite(h.get(metric))]
        values = [h[metric] for h in r.history if _finite(h.get(metric))]
        flat[0].plot(epochs, values, marker=".", color=colors[r.status], alpha=0.8)
    flat[0].set(title=f"{metric} per epoch", xlabel="epoch", ylabel=metric)
    for status, color in colors.items():
        flat[0].plot([], [], color=color, label=status)
    flat[0].legend(fontsize=8)
    for ax, p in zip(flat[1:], params, strict=False):
        done = [r for r in records if not math.isnan(r.best(metric, mode))]
        xs = [r.params.get(p.key) for r in done]
        ys = [r.best(metric, mode) for r in done]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if not numeric:
            labels = sorted({str(x) for x in xs})
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        ax.scatter(xs, ys, c=[colors[r.status] for r in done])
        if p.kind == "loguniform":
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
        ax.set(title=f"best {metric} vs {p.key}", xlabel=p.key, ylabel=metric)
    for ax in flat[panels:]:
        ax.set_visible(False)
    save_figure(fig, path, dpi=100)


def write_results(records: list[TrialRecord], sweep: SweepFacts, wall_s: float) -> str:
    """Write every output; returns the summary text that was also saved as summary.md."""
    out_dir, params, cfg = sweep.out_dir, sweep.params, sweep.cfg
    metric, mode = cfg.tune.metric, cfg.tune.mode
    write_csv(out_dir / "results.csv", records, params, metric, mode)
    plot_sweep(out_dir / "sweep.png", records, params, metric, mode)
    c = counts(records)
    lines = [
        f"# Sweep {out_dir}",
        "",
        f"{len(records)} trials in {wall_s:.0f}s: {c['completed']} completed, "
        f"{c['early_stopped']} stopped early by the scheduler ({cfg.tune.scheduler}), "
        f"{c['error']} failed. Metric: {metric} ({mode}), stage {cfg.tune.stage}.",
        "",
        summary_table(records, params, metric, mode),
        "",
    ]
    top = ranked(records, metric, mode)
    if top and not math.isnan(top[0].best(metric, mode)):
        (out_dir / "best.yaml").write_text(best_config(sweep, top[0]))
        lines.append(f"Best: {top[0].trial_id} -> {out_dir / 'best.yaml'}")
    else:
        lines.append("No trial reported a metric: no best.yaml written.")
    for r in records:
        if r.error:
            lines.append(f"- {r.trial_id} failed: {r.error}")
    text = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(text)
    return text
