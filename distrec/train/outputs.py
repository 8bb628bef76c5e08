"""What a run leaves for people and tools: metrics.json, ranks.parquet, report.md, report.png."""

from __future__ import annotations

import platform
from pathlib import Path

import pandas as pd

from distrec.config import RunConfig
from distrec.distributed.env import BACKEND_PACKAGES
from distrec.eval.bootstrap import paired_ratio, read_ranks, select_stage
from distrec.train.workspace import write_json
from distrec.utils.plotting import pyplot, save_figure

ROWS = [
    ("adapt", "adapted (source -> target; stages.adapt.mode)"),
    ("adapt_lora", "  adapted with a LoRA adapter"),
    ("adapt_full", "  adapted by full warm-start fine-tuning"),
    ("distill", "  distilled student (stages.distill)"),
    ("distill_alone", "  the same student without the teacher"),
    ("zero_shot", "zero-shot (source only)"),
    ("baseline_text_target_only", "target-only text model"),
    ("baseline_id_target_only", "target-only ID model (SASRec-style)"),
    ("baseline_popularity", "popularity"),
]
COLUMNS = ["ndcg@10", "recall@10", "ndcg@20", "recall@20", "ndcg@50", "recall@50", "mrr@10"]


def versions() -> dict[str, str]:
    """Python's and every stack package's version (metrics.json, perf results)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("distrec", "torch", "transformers", *BACKEND_PACKAGES, "peft", "webdataset", "ray"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


RANK_COLUMNS = ["stage", "split", "domain", "user", "rank"]


def write_stage_ranks(out: Path, stage: str, found: dict) -> Path:
    """ranks/<stage>.parquet: one row per (split, domain, user) with the target's 0-based
    fractional rank; `found` maps (domain, split) to UserRanks."""
    frames = [
        pd.DataFrame(
            {
                "stage": stage,
                "split": split,
                "domain": domain,
                "user": r.users.numpy().astype("int64"),
                "rank": r.ranks.numpy().astype("float64"),
            }
        )
        for (domain, split), r in found.items()
    ]
    path = out / "ranks" / f"{stage}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.concat(frames, ignore_index=True)[RANK_COLUMNS].to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def write_stage_heads(out: Path, stage: str, per_user: dict) -> Path:
    """heads/<stage>.parquet: one row per (split, domain, user) with the heads' per-user
    columns (held-out rating and prediction, per-user AUC, ...); `per_user` maps (domain,
    split) to {column: [U] tensor} with a `user` column."""
    frames = [
        pd.DataFrame(
            {
                "stage": stage,
                "split": split,
                "domain": domain,
                **{k: v.numpy() for k, v in columns.items()},
            }
        )
        for (domain, split), columns in per_user.items()
    ]
    path = out / "heads" / f"{stage}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def copy_stage_heads(out: Path, source: str, stage: str) -> None:
    """heads/<stage>.parquet as a copy of heads/<source>.parquet (the stage `adapt` = the
    adapt model auto mode chose); nothing when the source judged no head."""
    path = out / "heads" / f"{source}.parquet"
    if path.exists():
        frame = pd.read_parquet(path).assign(stage=stage)
        tmp = out / "heads" / f"{stage}.tmp"
        frame.to_parquet(tmp, index=False)
        tmp.replace(out / "heads" / f"{stage}.parquet")


def write_heads(out: Path, stages: dict) -> Path | None:
    """heads.parquet: every finished stage's per-user head columns in one table (None when
    no stage judged a head)."""
    parts = [
        pd.read_parquet(out / "heads" / f"{s}.parquet")
        for s in stages
        if (out / "heads" / f"{s}.parquet").exists()
    ]
    if not parts:
        return None
    path = out / "heads.parquet"
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)
    return path


def write_ranks(out: Path, stages: dict) -> Path:
    """ranks.parquet: every finished stage's per-user ranks in one table (a stage that ranks
    nothing, like the rating references, says so with `ranked: false`)."""
    parts = [
        pd.read_parquet(out / "ranks" / f"{s}.parquet")
        for s, record in stages.items()
        if record.get("ranked", True)
    ]
    path = out / "ranks.parquet"
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RANK_COLUMNS)
    frame.to_parquet(path, index=False)
    return path


def write_metrics(out: Path, cfg: RunConfig, stages: dict, extra: dict) -> Path:
    """ranks.parquet, then metrics.json: the stage records, the resolved config, package
    versions and `extra` (run-wide facts); returns metrics.json's path."""
    write_ranks(out, stages)
    write_heads(out, stages)
    path = out / "metrics.json"
    write_json(
        path,
        {"stages": stages, "config": cfg.model_dump(mode="json"), "versions": versions(), **extra},
    )
    return path


def stage_table(stages: dict, target: str | None) -> str:
    """The report's Markdown table: one row per finished stage (ROWS order), its test
    metrics in COLUMNS (nan where missing)."""
    lines = [
        f"Target domain: **{target}** (test split, full ranking, history masked)",
        "",
        "| stage | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for key, label in ROWS:
        if key in stages:
            test = stages[key]["test"]
            lines.append(
                f"| {label} | "
                + " | ".join(f"{test.get(c, float('nan')):.4f}" for c in COLUMNS)
                + " |"
            )
    return "\n".join(lines)


HEAD_ROWS = [
    *ROWS[:6],
    ("pretrain", "pretraining (sources)"),
    *ROWS[6:],
    ("baseline_item_mean", "item-mean rating"),
    ("baseline_global_mean", "global-mean rating"),
]
HEAD_COLUMNS = ["rmse", "mae", "auc", "gauc", "logloss", "accuracy", "macro_f1"]


def heads_table(stages: dict) -> str:
    """The heads' own metrics (test split) of every stage that reports any; empty when no
    stage does (retrieval alone)."""
    rows = [(label, stages[key]["test"]) for key, label in HEAD_ROWS if key in stages]
    columns = [c for c in HEAD_COLUMNS if any(c in test for _, test in rows)]
    rows = [(label, test) for label, test in rows if any(c in test for c in columns)]
    if not columns:
        return ""
    lines = [
        "Heads (test split; rating RMSE/MAE clipped to model.rating_range; CTR AUC, GAUC and "
        "logloss of each held-out item against the same fixed sampled negatives for every stage "
        "and baseline, eval.ctr_negatives per user; pretraining's on the sources):",
        "",
        "| stage | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, test in rows:
        cells = [f"{test[c]:.4f}" if c in test else "" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEYOND = ["coverage", "novelty", "ild", "ild_category", "arp"]


def beyond_table(stages: dict, k: int) -> str:
    """Beyond-accuracy metrics @k of every finished stage (test split); a column none of the
    stages has (e.g. ild_category without a category_field) is left out."""
    rows = [(label, stages[key]["test"]) for key, label in ROWS if key in stages]
    columns = [c for c in BEYOND if any(f"{c}@{k}" in test for _, test in rows)]
    if not columns:
        return ""
    lines = [
        f"Beyond accuracy of the top-{k} lists (test split; popularity's coverage is the floor): "
        "coverage = share of the catalog recommended to anyone, novelty = mean -log2 training "
        "share, ild = 1 - mean pairwise cosine of LM item features (ild_category: of the "
        "categories), arp = mean training interactions of recommended items.",
        "",
        "| stage | " + " | ".join(f"{c}@{k}" for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, test in rows:
        cells = [f"{test.get(f'{c}@{k}', float('nan')):.4f}" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def transfer_lines(stages: dict) -> list[str]:
    """The transfer techniques' facts: each distilled student's serving cost beside its
    teacher's, and the domain probe of pretraining (with the critic's last accuracy when
    aligned); empty when neither ran."""
    lines = []
    for key in ("distill", "distill_alone"):
        if key in stages:
            s, t = stages[key]["student"], stages[key]["teacher_serving"]
            lines.append(
                f"- {key}: test NDCG@10 {stages[key]['test']['ndcg@10']:.4f} with "
                f"{s['params']:.0f} target parameters ({s['params'] / t['params']:.1%} of the "
                f"teacher's) at {s['users_per_s']:.0f} users/s ({s['users_per_s'] / t['users_per_s']:.1f}x "
                f"the teacher's {t['users_per_s']:.0f}; fastest repeat)"
            )
    probe = stages.get("pretrain", {}).get("domain_probe")
    if probe is not None:
        history = stages["pretrain"].get("history") or [{}]
        critic = history[-1].get("domain_accuracy")
        lines.append(
            f"- domain probe ({probe['on']} representations): a fresh classifier's balanced "
            f"accuracy on held-out source/target items {probe['accuracy']:.1%} (chance 50%)"
            + (
                f"; the adversarial critic's last accuracy {critic:.1%}"
                if critic is not None
                else ""
            )
        )
    return ["Transfer techniques:", *lines, ""] if lines else []


RATIOS = [
    ("adapt", "baseline_text_target_only", "adapted / target-only text"),
    ("adapt", "baseline_id_target_only", "adapted / target-only ID"),
    ("zero_shot", "baseline_popularity", "zero-shot / popularity"),
]


def ratios(out: Path, stages: dict) -> list[str]:
    """Each transfer ratio of test NDCG@10 with its paired bootstrap 95% interval over the
    test users (one seed; perf/quality.py pools several)."""
    ranks = read_ranks(out / "ranks.parquet")
    lines = []
    for num, den, label in RATIOS:
        if num in stages and den in stages:
            for split in ("test", "valid"):
                iv = paired_ratio(
                    select_stage(ranks, num, split), select_stage(ranks, den, split), "ndcg@10"
                )
                lines.append(f"- {label} ({split}): {iv.format()}")
    return lines


def pretraining_lines(stages: dict) -> list[str]:
    """Pretraining's own test metrics on the sources (empty without pretraining)."""
    if "pretrain" not in stages:
        return []
    t = stages["pretrain"]["test"]
    return [
        f"Pretraining on {', '.join(stages['pretrain']['domains'])}: test NDCG@10 "
        f"{t['ndcg@10']:.4f}, Recall@10 {t['recall@10']:.4f}",
        "",
    ]


def write_report(out: Path, cfg: RunConfig, stages: dict, extra: dict) -> None:
    """report.md (stage table, transfer ratios, protocol and run facts) and report.png;
    reads ranks.parquet, so after `write_metrics`."""
    parts = [
        "# distrec run report",
        "",
        stage_table(stages, cfg.data.target),
        "",
        f"Seed {cfg.seed}, one run: `perf/quality.py --seeds N` repeats it over seeds (mean +/- "
        "std, intervals pooled over seeds) and adds RecBole peers on the same split.",
        "",
        "Transfer ratios (NDCG@10, [paired bootstrap 95% interval over users]):",
        *ratios(out, stages),
        "",
        beyond_table(stages, min(cfg.eval.ks)),
        "",
        heads_table(stages),
        "",
        *transfer_lines(stages),
        *pretraining_lines(stages),
    ]
    st = cfg.stages
    parts += [
        "Protocol: leave-one-out (last = test, second-to-last = valid); every item of the domain's "
        "catalog is ranked; the user's history is masked (the target itself stays rankable); "
        f"rank = items scoring higher + half the ties, scores in fp32. Validation "
        f"{cfg.eval.metric} picks the epoch and stops training (patience "
        f"{cfg.train.early_stopping_patience} evaluations, min_delta "
        f"{cfg.train.early_stopping_min_delta}).",
        "",
        f"Training: data.train_window={cfg.data.train_window} (training targets per epoch: "
        + ", ".join(
            f"{k} {v['train_targets_per_epoch']}"
            for k, v in stages.items()
            if v.get("train_targets_per_epoch")
        )
        + f"); score {cfg.model.score} / temperature {cfg.model.temperature}"
        + (" (learned)" if cfg.model.learn_temperature else "")
        + (f"; step budget {cfg.train.max_steps} per stage" if cfg.train.max_steps else "")
        + f"; adapt mode {st.adapt.mode}"
        + (f" (chose {stages['adapt'].get('mode')})" if "adapt" in stages else "")
        + ".",
        "",
        f"ID baseline tuning: its own learning rate ({st.id_baseline_lr}), dropout "
        f"({st.id_baseline_dropout}), up to {st.id_baseline_epochs} epochs with the same early "
        f"stopping, full-catalog softmax, the same user tower and history length "
        f"({cfg.data.max_history}) as the text model.",
        "",
        f"Data wait (fraction of training step time spent waiting for the loader): "
        f"{extra.get('data_wait_fraction', float('nan')):.2%}",
        f"Precision: {extra.get('precision')}; processes: {extra.get('world_size')}; "
        f"strategy: {extra.get('strategy')}; wall time: {extra.get('wall_s', 0):.0f}s",
    ]
    (out / "report.md").write_text("\n".join(parts) + "\n")
    plot_report(out / "report.png", stages)


def plot_report(path: Path, stages: dict) -> None:
    """report.png: validation NDCG@10 per epoch for each stage, and each stage's test NDCG@10."""
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, record in stages.items():
        hist = record.get("history")
        if hist:
            left.plot(
                [h["epoch"] for h in hist],
                [h["valid_ndcg@10"] for h in hist],
                marker="o",
                label=key,
            )
    left.set(title="validation NDCG@10 per epoch", xlabel="epoch", ylabel="NDCG@10")
    left.legend(fontsize=8)
    labels = [label for key, label in ROWS if key in stages]
    values = [stages[key]["test"]["ndcg@10"] for key, _ in ROWS if key in stages]
    right.barh(labels[::-1], values[::-1], color="#4477aa")
    for y, v in enumerate(values[::-1]):
        right.text(v, y, f" {v:.4f}", va="center", fontsize=8)
    right.set(title="test NDCG@10 on the target", xlabel="NDCG@10")
    save_figure(fig, path)
