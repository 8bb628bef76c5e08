"""End-to-end training step time and peak memory under execution options, in one process on
the same data: the baseline and each variant (a list of run-config overrides).

    python -m perf.step_options --suite quick --out runs/step-options
    python -m perf.step_options --suite full --steps 2,3,2 --out perf/results/step_options \
        data.prepared_dir=/path/to/data/prepared
    python -m perf.step_options --variant baseline --variant lm0:model.lm_dropout=0

Every variant is timed by `perf.bench_train.bench_mode` (the product's Trainer step through
`time_training`: warm-up dropped, median of windows and fastest window) on the end-to-end
LoRA model `end_to_end_model` builds, over the workload of `perf.workloads` (`quick`: tiny
random-init encoder on synthetic domains; `full`: configs/lora_end_to_end.yaml at batch 64
on MovieLens-1M with all-MiniLM-L6-v2). Ratios are to the first variant. Writes
step_options.json (results, full config, versions, machine), step_options.md and
step_options.png.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from perf.common import device_description, load_average, write_result

# name -> run-config overrides. Add a variant here (or pass --variant NAME:KEY=VALUE,...).
# The step as it was before issue 17's options: the frozen LM in fp32, padded length groups,
# the checkpoint's own LM dropout, LoRA dropout 0.05 and fused (sdpa) attention. Each `+name`
# variant changes one of those alone (an ablation); `default` is the config as shipped
# (configs/lora_end_to_end.yaml: every option on, both dropouts off), then with sdpa back,
# with checkpointing or with compile on top.
BEFORE = {
    "train.frozen_lm_storage": "fp32",
    "model.packing": "off",
    "model.lm_dropout": "null",
    "peft.dropout": "0.05",
    "model.attention": "sdpa",
}


def before_with(changes: dict[str, str]) -> list[str]:
    """The `BEFORE` step's overrides with `changes` made (KEY -> VALUE)."""
    return [f"{k}={v}" for k, v in {**BEFORE, **changes}.items()]


VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "compile": ["train.compile=true"],
    "checkpointing": ["model.activation_checkpointing=true"],
    "before": before_with({}),
    "+bf16_storage": before_with({"train.frozen_lm_storage": "auto"}),
    "+packing": before_with({"model.packing": "auto"}),
    "+no_lm_dropout": before_with({"model.lm_dropout": "0.0"}),
    "+no_lora_dropout": before_with({"peft.dropout": "0.0"}),
    "+no_user_tower_dropout": before_with({"model.user_tower.dropout": "0.0"}),
    "+eager_attention": before_with({"model.attention": "auto"}),
    "default": [],
    "default+sdpa": ["model.attention=sdpa"],
    "default+checkpointing": ["model.activation_checkpointing=true"],
    "default+compile": ["train.compile=true"],
}
DEFAULT_VARIANTS = ["baseline", "compile", "checkpointing"]
ABLATION = [
    "before",
    "+bf16_storage",
    "+packing",
    "+no_lm_dropout",
    "+no_lora_dropout",
    "+no_user_tower_dropout",
    "+eager_attention",
    "default",
    "default+sdpa",
    "default+checkpointing",
    "default+compile",
]
MIB = 2**20


@dataclass(frozen=True)
class Variant:
    """A named set of run-config overrides measured against the others."""

    name: str
    overrides: tuple[str, ...]


def parse_variant(spec: str) -> Variant:
    """`NAME` (a key of VARIANTS) or `NAME:KEY=VALUE[,KEY=VALUE...]` (values without commas)."""
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"--variant {spec!r}: expected NAME or NAME:KEY=VALUE[,KEY=VALUE...]")
    if not sep:
        if name not in VARIANTS:
            raise ValueError(
                f"--variant {spec!r}: not a known variant ({', '.join(VARIANTS)}); give its "
                f"overrides as {name}:KEY=VALUE[,KEY=VALUE...]"
            )
        return Variant(name, tuple(VARIANTS[name]))
    overrides = tuple(o.strip() for o in rest.split(",") if o.strip())
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ValueError(f"--variant {spec!r}: overrides {bad} are not KEY=VALUE")
    return Variant(name, overrides)


def parse_variants(specs: list[str]) -> list[Variant]:
    """The variants in order (DEFAULT_VARIANTS without any), names unique."""
    variants = [parse_variant(s) for s in (specs or DEFAULT_VARIANTS)]
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--variant: names {dupes} given twice; each variant needs its own name")
    return variants


def parse_steps(text: str) -> tuple[int, int, int]:
    """`WARMUP,WINDOWS,PER_WINDOW`, e.g. 2,3,2."""
    try:
        steps = tuple(int(x) for x in text.split(","))
    except ValueError:
        steps = ()
    if len(steps) != 3 or steps[0] < 1 or min(steps) < 1:
        raise ValueError(f"--steps {text!r}: expected WARMUP,WINDOWS,PER_WINDOW (each >= 1)")
    return steps  # type: ignore[return-value]


def variant_config(cfg, variant: Variant):
    """The workload's run config with the variant's overrides applied (validated again)."""
    from distrec.config import config_from_dict
    from distrec.config.load import apply_override

    tree = cfg.model_dump(mode="json")
    for item in variant.overrides:
        apply_override(tree, item)
    return config_from_dict(tree, f"variant {variant.name}")


def check_one_accelerator(cfg, variants: list[Variant]) -> None:
    """ValueError unless every variant keeps what the process's one Accelerator fixes (its
    state is a singleton: the first variant's precision and accumulation hold for all)."""
    from distrec.distributed.accelerator import resolve_precision

    def fixed(c) -> dict:
        return {
            "train.precision": resolve_precision(c.train.precision),
            "train.grad_accum": c.train.grad_accum,
        }

    first = fixed(variant_config(cfg, variants[0]))
    for v in variants[1:]:
        got = fixed(variant_config(cfg, v))
        if got != first:
            raise ValueError(
                f"--variant {v.name}: {got} differs from {variants[0].name}'s {first}; the "
                "Accelerator is one per process, so set these as workload overrides (positional "
                "KEY=VALUE) and compare them in separate runs"
            )


def release_memory() -> None:
    """Give freed memory back to the OS, so the next variant's RSS peak is its own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def forget_compiled(model) -> None:
    """Drop a variant's compiled code (the benchmark stops before `Trainer.finish`, which would
    restore eager): dynamo's caches would otherwise keep its model alive into the next one."""
    import torch

    for module in model.modules():
        module._compiled_call_impl = None
    torch._dynamo.reset()


def measure_variant(
    workload, variant: Variant, work: Path, steps, peak_flops: float, profile: int = 0
) -> dict:
    """One variant's step time (median of windows, fastest window), MFU and peak memory, and
    with `profile` steps where the step's time goes (after the measured windows)."""
    from distrec.train.compile import compile_stats
    from perf.bench_train import bench_mode, end_to_end_model
    from perf.common import build_run

    release_memory()
    domains = [workload.source, *([workload.target] if workload.target != workload.source else [])]
    ws = build_run(variant_config(workload.config, variant), work / "run", domains)
    model = end_to_end_model(ws, ws.text.lm)
    before, start = compile_stats(), time.perf_counter()
    print(f"[perf] step options: {variant.name} {list(variant.overrides)}")
    result = bench_mode(ws, model, workload.source, steps, peak_flops, profile)
    wall = time.perf_counter() - start
    after = compile_stats()
    forget_compiled(model)
    del model, ws
    return {
        "name": variant.name,
        "overrides": list(variant.overrides),
        "step_s": {
            "median": 1.0 / result["median"]["steps_per_s"],
            "fastest_window": 1.0 / result["best_window"]["steps_per_s"],
        },
        "mfu": {"median": result["median"]["mfu"], "fastest_window": result["best_window"]["mfu"]},
        "non_matmul_share": non_matmul_share(result),
        "peak_memory": result["memory"],
        "wall_s_with_setup_and_warmup": wall,
        "compile": {k: after[k] - before[k] for k in after},
        "train": result,
    }


def non_matmul_share(result: dict) -> float | None:
    """The profiled share of step time outside matmul and attention kernels (None unprofiled)."""
    prof = result.get("profile")
    return None if prof is None else 1.0 - prof["shares"]["matmul and attention kernels"]


def ratios(rows: list[dict]) -> None:
    """Add each row's ratios to the first row: step time (median, fastest) and memory."""
    first = rows[0]
    for row in rows:
        row["vs_first"] = {
            "speedup_median": first["step_s"]["median"] / row["step_s"]["median"],
            "speedup_fastest": first["step_s"]["fastest_window"] / row["step_s"]["fastest_window"],
            "memory_increase": row["peak_memory"]["increase_bytes"]
            / max(1, first["peak_memory"]["increase_bytes"]),
        }


def markdown(result: dict) -> str:
    """The table: step time, speed-up and peak memory per variant, ratios to the first."""
    rows = result["variants"]
    lines = [
        f"# Training step options ({result['suite']} suite)",
        "",
        f"{result['device']}; {result['workload']}; steps {result['steps']} "
        "(warm-up, windows, steps per window).",
        "",
        "| variant | overrides | step s (median) | step s (fastest) | speed-up median / fastest "
        "| MFU median / fastest | non-matmul share | peak memory increase MiB | memory vs first "
        "| graphs / recompiles |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs, c = r["vs_first"], r["compile"]
        overrides = ", ".join(f"`{o}`" for o in r["overrides"]) or "-"
        share = "-" if r["non_matmul_share"] is None else f"{r['non_matmul_share']:.0%}"
        lines.append(
            f"| {r['name']} | {overrides} | {r['step_s']['median']:.3f} | "
            f"{r['step_s']['fastest_window']:.3f} | {vs['speedup_median']:.2f}x / "
            f"{vs['speedup_fastest']:.2f}x | {r['mfu']['median']:.1%} / "
            f"{r['mfu']['fastest_window']:.1%} | {share} | "
            f"{r['peak_memory']['increase_bytes'] / MIB:.0f} | "
            f"{vs['memory_increase']:.2f}x | {c['unique_graphs']} / {c['recompiles']} |"
        )
    lines += [
        "",
        "Step time: seconds per optimizer step of the product's Trainer (median over windows, "
        "and the fastest window, the load-robust estimate on a shared machine). Memory: the "
        f"peak over the training run above its start ({rows[0]['peak_memory']['kind']}). "
        "Speed-up and memory are ratios to the first variant, measured in the same process. "
        "On CPU a later variant's RSS can reuse memory an earlier one freed, which understates "
        "its increase: cross-check memory with that variant first (or on a GPU, where the "
        "allocator's peak is exact).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m perf.step_options", description=__doc__)
    p.add_argument("--suite", choices=["quick", "full"], default="quick")
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help=f"NAME ({', '.join(VARIANTS)}) or NAME:KEY=VALUE[,...]; repeat (default "
        f"{', '.join(DEFAULT_VARIANTS)}); the first is the reference",
    )
    p.add_argument("--steps", default=None, help="WARMUP,WINDOWS,PER_WINDOW (default: the suite's)")
    p.add_argument(
        "--ablation",
        action="store_true",
        help=f"measure the ablation path ({', '.join(ABLATION)}) instead of --variant",
    )
    p.add_argument(
        "--profile", type=int, default=0, help="profiled steps per variant (the non-matmul share)"
    )
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default OUT/work)")
    p.add_argument("overrides", nargs="*", help="run-config overrides of the workload itself")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure every variant, write step_options.json and step_options.md; 2 on bad input."""
    args = parse_args(argv)
    try:
        if args.ablation and args.variant:
            raise ValueError("--ablation measures its own variants: drop --variant")
        variants = parse_variants(ABLATION if args.ablation else args.variant)
        steps = parse_steps(args.steps) if args.steps else None
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    from distrec.distributed.accelerator import resolve_precision
    from perf.bench_peak import DTYPES, default_sizes, matmul_flops
    from perf.workloads import full_workload, quick_workload

    work = args.work or args.out / "work"
    workload = (
        quick_workload(work, args.overrides)
        if args.suite == "quick"
        else full_workload(work, args.overrides, None)
    )
    steps = steps or workload.steps.end_to_end
    try:
        check_one_accelerator(workload.config, variants)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    load_start = load_average()
    # MFU's denominator, at the precision the variants train in (bench_mode reports MFU).
    dtype = DTYPES[resolve_precision(workload.config.train.precision)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = matmul_flops(default_sizes()[0], dtype, device, 0.3)["flops_per_s"]
    rows = [measure_variant(workload, v, work, steps, peak, args.profile) for v in variants]
    ratios(rows)
    result = {
        "benchmark": "step_options",
        "suite": args.suite,
        "device": device_description(),
        "workload": f"{workload.encoder}, {workload.source}, batch {workload.config.train.batch_size}",
        "steps": list(steps),
        "peak_flops_per_s": peak,
        "load_average_start": load_start,
        "variants": rows,
        "config": workload.describe(),
    }
    write_result(args.out / "step_options.json", result)
    text = markdown(result)
    (args.out / "step_options.md").write_text(text)
    plot(result, args.out / "step_options.png")
    print(text)
    return 0


def plot(result: dict, path: Path) -> str:
    """Speed-up (median and fastest window) and memory growth per variant, to the first."""
    from distrec.utils.plotting import pyplot, save_figure

    rows = result["variants"]
    names = [r["name"] for r in rows]
    at = list(range(len(rows)))
    fig, (speed, memory) = pyplot().subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.5))
    for offset, key, label in (
        (-0.2, "speedup_median", "median"),
        (0.2, "speedup_fastest", "fastest window"),
    ):
        speed.barh([y + offset for y in at], [r["vs_first"][key] for r in rows], 0.4, label=label)
    speed.axvline(1.0, color="grey", lw=0.8)
    speed.set(yticks=at, yticklabels=names, xlabel=f"step speed-up vs {names[0]}")
    speed.invert_yaxis()
    speed.legend(loc="center right")
    memory.barh(at, [r["vs_first"]["memory_increase"] for r in rows], 0.6, color="tab:purple")
    memory.axvline(1.0, color="grey", lw=0.8)
    memory.set(yticks=at, yticklabels=[], xlabel=f"peak memory growth vs {names[0]}")
    memory.invert_yaxis()
    fig.suptitle(f"End-to-end step options ({result['suite']} suite, {result['workload']})")
    return save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
