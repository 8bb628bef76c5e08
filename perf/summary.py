"""summary.json (the headline numbers and the issue's targets) and summary.md from the
benchmarks' results."""

from __future__ import annotations

from dataclasses import dataclass

from perf.common import device_description, load_average

GIB = 2**30
# The CPU full suite's recorded end-to-end peak (perf/results/cpu/summary.md) that the memory
# target halves.
E2E_PEAK_MEMORY_REFERENCE_GIB = 8.74

TARGETS = {
    "mfu_e2e": (">=", 0.35, "end-to-end LoRA step MFU vs measured bf16 matmul peak"),
    "speedup_vs_hf_trainer": (">=", 4.0, "distrec end-to-end users/s / HF Trainer + PEFT"),
    "speedup_vs_hf_trainer_dedup": (
        ">=",
        1.5,
        "distrec end-to-end users/s / HF Trainer + PEFT with a de-duplicating forward",
    ),
    "cached_over_e2e": (">=", 50.0, "cached users/s / end-to-end users/s"),
    "data_wait_fraction_cached": ("<", 0.05, "share of cached-mode step time waiting for data"),
    "e2e_peak_memory_gib": (
        "<=",
        round(0.5 * E2E_PEAK_MEMORY_REFERENCE_GIB, 2),
        f"end-to-end training peak memory in GiB; 0.5 x the CPU full suite's "
        f"{E2E_PEAK_MEMORY_REFERENCE_GIB}",
    ),
}
# A target also met when its alternative holds: (summary key, op, bound, what).
ALTERNATIVES = {
    "mfu_e2e": ("non_matmul_share_e2e", "<", 0.25, "profiled non-matmul share of the e2e step"),
}


@dataclass(frozen=True)
class SuiteResults:
    """Each benchmark's saved result of one suite run; None where it was skipped."""

    peak: dict
    train: dict
    baseline: dict | None = None
    equal_loss: dict | None = None
    evaluation: dict | None = None
    data: dict | None = None
    memory: dict | None = None
    scaling: dict | None = None
    baseline_dedup: dict | None = None


def _met(value, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    if op == ">=":
        return value >= bound
    return value <= bound if op == "<=" else value < bound


def summarize(
    results: SuiteResults, *, suite: str, workload, skipped: dict[str, str], load_start
) -> dict:
    """summary.json's content: headline numbers, optional sections, targets and run facts."""
    s = _headline(suite, results)
    s["equal_loss"] = _equal_loss(results.equal_loss)
    s.update(_optional_sections(results))
    s["targets"] = _targets(s)
    s["targets_note"] = _targets_note(suite, load_start)
    s["skipped"] = skipped
    s["load_average_start"] = load_start
    s["load_average_end"] = load_average()
    s["config"] = workload.describe()
    return s


def _headline(suite: str, results: SuiteResults) -> dict:
    """Training throughput, MFU and data wait of both modes (equal_loss is filled in later)."""
    peak, train = results.peak, results.train
    baseline, dedup = results.baseline, results.baseline_dedup
    e2e, cached = train["end_to_end"], train["cached"]
    users = _users_per_s(e2e, cached, baseline, dedup)
    vendor = peak["vendor"]
    return {
        "suite": suite,
        "device": device_description(),
        "precision": e2e["precision"],
        "peak_flops_per_s": {
            "fp32_measured": peak["measured"]["fp32"]["flops_per_s"],
            "bf16_measured": peak["measured"]["bf16"]["flops_per_s"],
            "vendor": vendor,
        },
        "mfu_e2e": e2e["median"]["mfu"],
        "mfu_e2e_vs_vendor_bf16": (
            e2e["median"]["model_flops_per_s"] / vendor["bf16"] if vendor else None
        ),
        "non_matmul_share_e2e": _non_matmul_share(e2e),
        "mfu_cached": cached["median"]["mfu"],
        "users_per_s": users,
        "items_encoded_per_s_e2e": e2e["median"]["items_encoded_per_s"],
        "tokens_per_s_e2e": e2e["median"]["tokens_per_s"],
        "model_flops_per_s_e2e": e2e["median"]["model_flops_per_s"],
        "cached_over_e2e": users["cached"] / users["end_to_end"],
        "speedup_vs_hf_trainer": _ratio(users, "end_to_end", "hf_trainer_baseline"),
        "speedup_vs_hf_trainer_dedup": _ratio(users, "end_to_end", "hf_trainer_dedup_baseline"),
        "e2e_peak_memory_gib": e2e["memory"]["peak_bytes"] / GIB,
        "e2e_peak_memory_kind": e2e["memory"]["kind"],
        "dedup_items_per_user": {
            "distrec": e2e["per_step_mean"]["items_encoded"]
            / max(1, e2e["per_step_mean"]["users"]),
            "hf_trainer_baseline": baseline["items_encoded_per_user"] if baseline else None,
            "hf_trainer_dedup_baseline": dedup["items_encoded_per_user"] if dedup else None,
        },
        "equal_loss": None,  # placeholder: keeps the key's place in summary.json
        "best_window": _best_window(e2e, cached, baseline, dedup),
        "data_wait_fraction_cached": cached["median"]["data_wait_fraction"],
        "data_wait_fraction_e2e": e2e["median"]["data_wait_fraction"],
        "mfu_explanation": e2e.get("mfu_explanation"),
    }


def _non_matmul_share(e2e: dict) -> float | None:
    """1 - the matmul/attention kernels' share of the profiled end-to-end step (None unprofiled)."""
    profile = e2e.get("profile")
    return 1.0 - profile["shares"]["matmul and attention kernels"] if profile else None


def _ratio(rates: dict, top: str, bottom: str) -> float | None:
    return rates[top] / rates[bottom] if rates.get(bottom) is not None else None


def _users_per_s(e2e: dict, cached: dict, baseline: dict | None, dedup: dict | None) -> dict:
    users = {"cached": cached["median"]["users_per_s"], "end_to_end": e2e["median"]["users_per_s"]}
    if baseline is not None:
        users["hf_trainer_baseline"] = baseline["median"]["users_per_s"]
    if dedup is not None:
        users["hf_trainer_dedup_baseline"] = dedup["median"]["users_per_s"]
    return users


def _best_window(e2e: dict, cached: dict, baseline: dict | None, dedup: dict | None) -> dict:
    """The same ratios from each mode's fastest measured window."""
    users = {
        "cached": cached["best_window"]["users_per_s"],
        "end_to_end": e2e["best_window"]["users_per_s"],
        "hf_trainer_baseline": baseline["best_window"]["users_per_s"] if baseline else None,
        "hf_trainer_dedup_baseline": dedup["best_window"]["users_per_s"] if dedup else None,
    }
    return {
        "note": "the fastest measured window of each mode: contention on a shared machine "
        "only slows windows down, so these ratios are the load-robust estimate",
        "users_per_s": users,
        "mfu_e2e": e2e["best_window"]["mfu"],
        "cached_over_e2e": users["cached"] / users["end_to_end"],
        "speedup_vs_hf_trainer": _ratio(users, "end_to_end", "hf_trainer_baseline"),
        "speedup_vs_hf_trainer_dedup": _ratio(users, "end_to_end", "hf_trainer_dedup_baseline"),
        "data_wait_fraction_cached": cached["best_window"]["data_wait_fraction"],
    }


def _equal_loss(equal: dict | None) -> dict | None:
    """The check's verdict (over every baseline it covered) and, where recorded, each one's."""
    if equal is None:
        return None
    keys = ("losses_match", "max_rel_diff", "max_abs_diff", "rtol")
    out = {k: equal[k] for k in keys} | {"steps": equal["config"]["steps"]}
    if "per_baseline" in equal:
        out["per_baseline"] = {
            name: {k: a[k] for k in ("losses_match", "max_rel_diff")}
            for name, a in equal["per_baseline"].items()
        }
    return out


def _optional_sections(results: SuiteResults) -> dict:
    """The sections of benchmarks that ran, in summary.json's order."""
    s = {}
    if results.evaluation is not None:
        s["eval"] = _eval_numbers(results.evaluation)
    if results.data is not None:
        s["loader_best"] = _loader_best(results.data["results"])
        s["dedup_by_batch_size"] = {
            r["batch_size"]: r["occurrences_per_distinct"]
            for r in results.data.get("dedup_by_batch_size", [])
        }
    if results.memory is not None:
        memory = results.memory
        s["peak_memory_bytes"] = {k: v["peak_bytes"] for k, v in memory["per_mode"].items()}
        s["zero_memory"] = memory["zero"]
    if results.scaling is not None and results.scaling.get("validation"):
        v = results.scaling["validation"]
        s["scaling_validation"] = {
            "predicted_step_s": v["prediction"]["step_s"],
            "measured_step_s": v["measured_step_s"],
            "relative_error": v["relative_error"],
        }
    return s


def _eval_numbers(evaluation: dict) -> dict:
    return {
        "catalog_items_per_s_e2e": evaluation["catalog_end_to_end"]["items_per_s"],
        "catalog_items_per_s_cached": evaluation["catalog_cached"]["items_per_s"],
        "users_ranked_per_s": evaluation["ranking"]["users_ranked_per_s"],
        "catalog_items": evaluation["ranking"]["catalog_items"],
    }


def _loader_best(rows: list[dict]) -> dict:
    """The fastest worker count of each loader mode."""
    best = {}
    for r in rows:
        if r["sequences_per_s"] > best.get(r["mode"], {}).get("sequences_per_s", 0):
            best[r["mode"]] = {"workers": r["workers"], "sequences_per_s": r["sequences_per_s"]}
    return best


def _targets(s: dict) -> dict:
    """Each target's value, bound and verdict; one with an alternative is met if either is."""
    out = {}
    for key, (op, bound, what) in TARGETS.items():
        t = {"value": s.get(key), "target": f"{op} {bound}", "met": _met(s.get(key), op, bound)}
        if key in ALTERNATIVES:
            alt_key, alt_op, alt_bound, alt_what = ALTERNATIVES[key]
            alt = {
                "key": alt_key,
                "value": s.get(alt_key),
                "target": f"{alt_op} {alt_bound}",
                "met": _met(s.get(alt_key), alt_op, alt_bound),
                "what": alt_what,
            }
            verdicts = [m for m in (t["met"], alt["met"]) if m is not None]
            t = t | {"met": any(verdicts) if verdicts else None, "alternative": alt}
        out[key] = t | {"what": what}
    return out


def _targets_note(suite: str, load_start) -> str:
    if suite == "quick":
        return (
            "the issue's targets are stated for --suite full (the demo's MiniLM on MovieLens); "
            "the quick suite's tiny random model only checks the machinery"
        )
    return (
        f"measured side by side in this run; load average at start {load_start} on "
        f"{device_description()}"
    )


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def summary_markdown(s: dict) -> str:
    """summary.md: the targets table, then one section per benchmark that ran."""
    sections = (
        _md_header,
        _md_targets,
        _md_throughput,
        _md_step_time,
        _md_eval,
        _md_data,
        _md_memory,
        _md_scaling,
        _md_failed,
        _md_skipped,
    )
    lines = [line for section in sections for line in section(s)]
    lines += ["", "Plots: " + ", ".join(s.get("plots", [])), ""]
    return "\n".join(lines)


def _md_header(s: dict) -> list[str]:
    rc = s["config"]["run_config"]
    return [
        f"# distrec bench — {s['suite']} suite",
        "",
        f"Device: {s['device']}; precision {s['precision']}; load average at start "
        f"{s['load_average_start']}, at end {s['load_average_end']}; "
        f"{s.get('wall_s', 0):.0f} s wall. Encoder: {s['config']['encoder']}. "
        f"Batch: {rc['train']['batch_size']} users per step (distrec and the baselines alike); "
        f"model.length_buckets {rc['model']['length_buckets']}; "
        f"model.lm_dropout {rc['model']['lm_dropout']} (None = the checkpoint's own).",
    ]


def _md_targets(s: dict) -> list[str]:
    b = s["best_window"]
    lines = [
        "",
        "## Targets",
        "",
        "| metric | median of windows | fastest window | target | met (median) |",
        "|---|---|---|---|---|",
    ]
    for key, t in s["targets"].items():
        value, target = _fmt(t["value"]), t["target"]
        if t.get("alternative"):
            alt = t["alternative"]
            value += f"; {alt['key']} {_fmt(alt['value'])}"
            target += f", or {alt['key']} {alt['target']} ({alt['what']})"
        lines.append(
            f"| {key} ({t['what']}) | {value} | {_fmt(b.get(key))} | {target} | {_fmt(t['met'])} |"
        )
    return [*lines, "", f"_{s['targets_note']}. Fastest window: {b['note']}._"]


def _md_throughput(s: dict) -> list[str]:
    b, p, items = s["best_window"], s["peak_flops_per_s"], s["dedup_items_per_user"]
    lines = [
        "",
        "## Throughput",
        "",
        "| | users/s (median) | users/s (fastest window) |",
        "|---|---|---|",
    ]
    for k, v in s["users_per_s"].items():
        lines.append(f"| {k} | {_fmt(v)} | {_fmt(b['users_per_s'].get(k))} |")
    lines += [
        "",
        f"- end-to-end: {_fmt(s['items_encoded_per_s_e2e'])} items encoded/s, "
        f"{_fmt(s['tokens_per_s_e2e'])} tokens/s, {s['model_flops_per_s_e2e'] / 1e9:.1f} GFLOP/s "
        f"model FLOPs = MFU {s['mfu_e2e']:.1%} of the measured bf16 peak "
        f"({p['bf16_measured'] / 1e9:.0f} GFLOP/s; fp32 {p['fp32_measured'] / 1e9:.0f} GFLOP/s)",
        f"- items encoded per user: distrec {_fmt(items['distrec'])} (distinct items of the "
        f"batch), HF Trainer baseline {_fmt(items['hf_trainer_baseline'])} (every history "
        f"item), HF Trainer dedup baseline {_fmt(items.get('hf_trainer_dedup_baseline'))} "
        f"(distinct items of the batch, one LM call padded to the longest)",
        f"- data-wait fraction: cached {s['data_wait_fraction_cached']:.1%}, end-to-end "
        f"{s['data_wait_fraction_e2e']:.1%}",
    ]
    if s.get("mfu_e2e_vs_vendor_bf16") is not None:
        lines.append(
            f"- MFU vs the vendor's bf16 dense peak ({p['vendor']['model']}, "
            f"{p['vendor']['bf16'] / 1e12:.0f} TFLOP/s): {s['mfu_e2e_vs_vendor_bf16']:.1%}"
        )
    if s.get("non_matmul_share_e2e") is not None:
        lines.append(
            f"- profiled end-to-end step: {s['non_matmul_share_e2e']:.0%} of op time outside "
            f"matmul and attention kernels"
        )
    return lines + _md_equal_loss(s.get("equal_loss"))


def _md_equal_loss(e: dict | None) -> list[str]:
    if not e:
        return []
    per = "".join(
        f"; {name}: {_fmt(a['losses_match'])} ({a['max_rel_diff']:.1e})"
        for name, a in e.get("per_baseline", {}).items()
    )
    return [
        f"- equal-loss check ({e['steps']} steps, tiny case, fp32): losses match "
        f"{_fmt(e['losses_match'])}, max relative difference {e['max_rel_diff']:.1e} "
        f"(tolerance {e['rtol']:.0e}){per}"
    ]


def _md_step_time(s: dict) -> list[str]:
    if not s.get("mfu_explanation"):
        return []
    return ["", "## Where the end-to-end step time goes", "", s["mfu_explanation"]]


def _md_eval(s: dict) -> list[str]:
    if not s.get("eval"):
        return []
    e = s["eval"]
    return [
        "",
        "## Evaluation",
        "",
        f"- catalog encoding: {_fmt(e['catalog_items_per_s_e2e'])} items/s end-to-end (LM "
        f"forward), {_fmt(e['catalog_items_per_s_cached'])} items/s cached (projection)",
        f"- full-catalog ranking ({e['catalog_items']} items): "
        f"{_fmt(e['users_ranked_per_s'])} users/s",
    ]


def _md_data(s: dict) -> list[str]:
    if not s.get("loader_best"):
        return []
    return ["", "## Data", ""] + [
        f"- loader alone, {mode}: {_fmt(b['sequences_per_s'])} sequences/s ({b['workers']} workers)"
        for mode, b in s["loader_best"].items()
    ]


def _md_memory(s: dict) -> list[str]:
    if not s.get("peak_memory_bytes"):
        return []
    lines = ["", "## Memory (peak)", ""]
    lines += [f"- {k}: {v / 2**30:.2f} GiB" for k, v in s["peak_memory_bytes"].items()]
    if s.get("zero_memory"):
        per_rank = s["zero_memory"].get("per_rank_state_bytes", {})
        lines += [
            f"- ZeRO benchmark, {k}: {v / 2**20:.1f} MiB model state per rank"
            for k, v in per_rank.items()
        ]
    return lines


def _md_scaling(s: dict) -> list[str]:
    if not s.get("scaling_validation"):
        return []
    v = s["scaling_validation"]
    return [
        "",
        "## Scaling model check (1 vs 2 processes)",
        "",
        f"- predicted 2-process step {v['predicted_step_s']:.2f} s, measured "
        f"{v['measured_step_s']:.2f} s (error {v['relative_error']:+.0%})",
    ]


def _md_failed(s: dict) -> list[str]:
    if not s.get("failures"):
        return []
    return ["", "## Failed", ""] + [
        f"- {k}: {why.splitlines()[0]}" for k, why in s["failures"].items()
    ]


def _md_skipped(s: dict) -> list[str]:
    if not s["skipped"]:
        return []
    return ["", "## Skipped", ""] + [f"- {k}: {why}" for k, why in s["skipped"].items()]
