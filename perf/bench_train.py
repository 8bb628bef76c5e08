"""Training throughput of distrec's own trainer step, cached and end-to-end LoRA.

Times `distrec.train.loop.train_epoch` (the product's step: loader wait, forward, loss,
backward, clipping, optimizer) through its `on_step` hook: warm-up steps are dropped and
the rest is cut into windows; every rate is the median over windows. FLOPs are analytic
(`perf.flops`), MFU is against the peak measured in the same run (`perf.bench_peak`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import get_cosine_schedule_with_warmup

from perf.common import PeakMemory, load_average, median_windows, sync
from perf.flops import FORMULA, lm_shape, lm_train_flops, tower_shape, tower_train_flops

MATMUL_OPS = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_efficient_attention_backward",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_backward",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_cudnn_attention_backward",
}
CATEGORIES = {
    "dtype casts (autocast copies)": {
        "aten::copy_",
        "aten::_to_copy",
        "aten::to",
    },
    "dropout masks": {"aten::bernoulli_", "aten::native_dropout", "aten::native_dropout_backward"},
    "optimizer (AdamW)": {
        "aten::_foreach_sqrt",
        "aten::_foreach_add_",
        "aten::_foreach_mul_",
        "aten::_foreach_div_",
        "aten::_foreach_lerp_",
        "aten::_foreach_addcmul_",
        "aten::_foreach_addcdiv_",
        "aten::lerp_",
        "aten::addcdiv_",
        "aten::addcmul_",
        "aten::sqrt",
    },
}


@dataclass
class BatchStats:
    users: int
    positions: int
    row_sq: int  # sum over rows of (real history length)^2: user-tower attention
    items: int  # item vectors computed (distinct items in end-to-end, whole catalog cached)
    tokens: int
    padded_tokens: int
    token_sq: int  # sum over encoded items of (real tokens)^2: LM attention


def batch_stats(batch: dict, catalog_size: int, buckets: int = 1) -> BatchStats:
    """`buckets`: the model's length groups (model.length_buckets), for the padded count."""
    from distrec.models.encoder import length_groups

    valid = batch["valid"]
    lengths = (batch["inputs"] > 0).sum(1)[valid]
    positions = int(((batch["targets"] > 0) & valid[:, None]).sum())
    if "attention_mask" in batch:
        per_item = batch["attention_mask"].sum(1)
        return BatchStats(
            users=int(valid.sum()),
            positions=positions,
            row_sq=int((lengths**2).sum()),
            items=len(batch["items"]),
            tokens=int(per_item.sum()),
            padded_tokens=sum(len(g) * w for g, w in length_groups(per_item, buckets)),
            token_sq=int((per_item**2).sum()),
        )
    return BatchStats(int(valid.sum()), positions, int((lengths**2).sum()), catalog_size, 0, 0, 0)


class RecordingLoader:
    """The trainer's own loader, passed through unchanged, noting each batch's size."""

    def __init__(self, loader, catalog_sizes: dict[str, int], buckets: int = 1) -> None:
        self.loader, self.catalog_sizes, self.buckets = loader, catalog_sizes, buckets
        self.stats: list[BatchStats] = []

    def __iter__(self):
        for batch in self.loader:
            self.stats.append(batch_stats(batch, self.catalog_sizes[batch["domain"]], self.buckets))
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def step_flops(s: BatchStats, lm: dict | None, towers: dict) -> float:
    flops = tower_train_flops(towers, s.items, s.positions, s.row_sq, s.items * s.positions)
    if lm is not None:
        flops += lm_train_flops(lm, s.tokens, s.token_sq)
    return flops


def prepared_trainer(run, model, plan, total: int):
    """The optimizer, schedule and epoch state `fit` builds (fit itself would also evaluate
    and checkpoint every epoch, which is not training throughput)."""
    from distrec.train.loop import EpochState

    cfg = run.cfg
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(cfg.train.warmup_ratio * total), total
    )
    model, optimizer = run.accelerator.prepare(model, optimizer)
    state = EpochState(gen=torch.Generator().manual_seed(cfg.seed), scheduler=scheduler)
    return model, optimizer, scheduler, state


def run_train_epoch(run, model, optimizer, scheduler, loader, plan, state, on_step, total):
    """The product's `train_epoch`; a benchmark never checkpoints (a no-op callback)."""
    from distrec.train.loop import train_epoch

    return train_epoch(
        run, model, optimizer, scheduler, loader, plan, state, on_step, total, lambda: None
    )


def distrec_step_losses(run, model, plan, steps: int) -> list[float]:
    """Each step's loss from the product's train_epoch (it keeps a running sum)."""
    from distrec.train.loop import build_loader

    loader = build_loader(run, plan)
    model, optimizer, scheduler, state = prepared_trainer(run, model, plan, steps)
    before: list[float] = []  # on_step runs before the step's loss is added to the sum
    run_train_epoch(
        run,
        model,
        optimizer,
        scheduler,
        loader,
        plan,
        state,
        lambda _m, _s: before.append(state.epoch_loss),
        steps,
    )
    after = [*before[1:], state.epoch_loss]
    return [b - a for a, b in zip(before, after, strict=True)]


def time_training(
    run,
    model: torch.nn.Module,
    plan,
    warmup: int,
    windows: int,
    per_window: int,
    peak_flops: float,
    profile_steps: int = 0,
) -> dict:
    """Run the product's train_epoch for warm-up + measured (+ profiled) steps and report
    median-of-window rates, data-wait share, MFU and (optionally) a profile."""
    from distrec.train.loop import build_loader

    cfg, acc = run.cfg, run.accelerator
    sizes = {n: d.num_items for n, d in run.domains.items()}
    loader = RecordingLoader(build_loader(run, plan), sizes, run.cfg.model.length_buckets)
    measured = windows * per_window
    total = warmup + measured + profile_steps
    if len(loader) < total:
        raise ValueError(
            f"{plan.name}: an epoch has {len(loader)} batches, the benchmark needs {total}; "
            f"use fewer steps or a smaller train.batch_size"
        )
    model, optimizer, scheduler, state = prepared_trainer(run, model, plan, total)
    marks: list[tuple[float, float]] = []
    prof = _profiler(warmup + measured, profile_steps) if profile_steps else None

    def on_step(_model, _step: int) -> None:
        sync()
        marks.append((time.perf_counter(), state.epoch_wait_s))
        if prof is not None:
            prof.step()

    load_before = load_average()
    with PeakMemory() as mem:
        if prof is not None:
            with prof:
                run_train_epoch(
                    run, model, optimizer, scheduler, loader, plan, state, on_step, total
                )
        else:
            run_train_epoch(run, model, optimizer, scheduler, loader, plan, state, on_step, total)
    if len(marks) < total:
        raise RuntimeError(f"{plan.name}: the trainer stopped after {len(marks)} of {total} steps")
    lm = lm_shape(run.lm) if (cfg.model.mode == "end_to_end" and run.lm is not None) else None
    towers = tower_shape(acc.unwrap_model(model), cfg.model.dim, cfg.model.user_tower.layers)
    rows = []
    for w in range(windows):
        first, last = warmup + w * per_window, warmup + (w + 1) * per_window - 1
        (t0, wait0), (t1, wait1) = marks[first - 1], marks[last]
        stats = loader.stats[first : last + 1]
        seconds = t1 - t0
        flops = sum(step_flops(s, lm, towers) for s in stats)
        rows.append(
            {
                "seconds": seconds,
                "steps_per_s": per_window / seconds,
                "users_per_s": sum(s.users for s in stats) / seconds,
                "items_encoded_per_s": sum(s.items for s in stats) / seconds,
                "tokens_per_s": sum(s.tokens for s in stats) / seconds,
                "padded_tokens_per_s": sum(s.padded_tokens for s in stats) / seconds,
                "model_flops_per_s": flops / seconds,
                "data_wait_fraction": (wait1 - wait0) / seconds,
            }
        )
    keys = [k for k in rows[0] if k != "seconds"]
    summary = {k: median_windows([r[k] for r in rows])["median"] for k in keys}
    summary["mfu"] = summary["model_flops_per_s"] / peak_flops
    # On a shared machine contention only ever slows a window down: the fastest window is
    # the load-robust estimate, reported beside the median.
    best = dict(max(rows, key=lambda r: r["users_per_s"]))
    best["mfu"] = best["model_flops_per_s"] / peak_flops
    m_stats = loader.stats[warmup : warmup + measured]
    (t_a, wait_a), (t_b, wait_b) = marks[warmup - 1], marks[warmup + measured - 1]
    result = {
        "mode": cfg.model.mode,
        "precision": run.precision,
        "steps": {"warmup": warmup, "windows": windows, "per_window": per_window},
        "median": summary,
        "best_window": best,
        "windows": rows,
        "data_wait_fraction_measured": (wait_b - wait_a) / (t_b - t_a),
        "per_step_mean": {
            "users": _mean([s.users for s in m_stats]),
            "positions": _mean([s.positions for s in m_stats]),
            "items_encoded": _mean([s.items for s in m_stats]),
            "tokens": _mean([s.tokens for s in m_stats]),
            "padded_tokens": _mean([s.padded_tokens for s in m_stats]),
            "model_flops": _mean([step_flops(s, lm, towers) for s in m_stats]),
        },
        "flops": {"formula": FORMULA, "lm": lm, "towers": towers},
        "peak_flops_per_s": peak_flops,
        "mean_loss": state.epoch_loss / max(1, state.epoch_batches),
        "memory": mem.report(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    if prof is not None:
        wall = marks[-1][0] - marks[-1 - profile_steps][0]
        flops = sum(step_flops(s, lm, towers) for s in loader.stats[-profile_steps:])
        result["profile"] = summarize_profile(prof, wall, flops, peak_flops, profile_steps)
    return result


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def _profiler(skip: int, active: int):
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    # The profiled steps come after the measured ones, so profiling never slows a window.
    return profile(activities=activities, schedule=schedule(wait=skip - 1, warmup=1, active=active))


def summarize_profile(prof, wall_s: float, model_flops: float, peak: float, steps: int) -> dict:
    """Where a step's time goes: top ops by self time, the matmul share, and how fast the
    matmul kernels themselves ran (MFU ~= matmul share x matmul kernel efficiency)."""
    on_gpu = torch.cuda.is_available()

    def self_time(e) -> float:  # microseconds
        return e.self_device_time_total if on_gpu else e.self_cpu_time_total

    events = [
        e for e in prof.key_averages() if self_time(e) > 0 and not e.key.startswith("ProfilerStep")
    ]
    total_us = sum(self_time(e) for e in events)
    matmul_us = sum(self_time(e) for e in events if e.key in MATMUL_OPS)
    shares = {
        name: sum(self_time(e) for e in events if e.key in ops) / total_us
        for name, ops in CATEGORIES.items()
    }
    shares = {"matmul and attention kernels": matmul_us / total_us, **shares}
    shares["other (elementwise, norms, softmax, gelu, indexing)"] = 1.0 - sum(shares.values())
    top = sorted(events, key=self_time, reverse=True)[:15]
    matmul_eff = model_flops / (matmul_us / 1e6) / peak if matmul_us else 0.0
    return {
        "profiled_steps": steps,
        "time_basis": "self device time" if on_gpu else "self CPU time (calling thread)",
        "profiled_wall_s": wall_s,
        "profiled_op_time_s": total_us / 1e6,
        "shares": shares,
        "matmul_kernel_efficiency_vs_peak": matmul_eff,
        "top_ops": [
            {
                "op": e.key,
                "self_s": self_time(e) / 1e6,
                "share": self_time(e) / total_us,
                "calls": e.count,
            }
            for e in top
        ],
    }


def explain_mfu(result: dict, target: float = 0.30) -> str | None:
    """Sentences built from the profile and the batch shapes saying where the time goes."""
    prof = result.get("profile")
    mfu = result["median"]["mfu"]
    if mfu >= target or prof is None:
        return None
    s = prof["shares"]
    parts = ", ".join(f"{k} {v:.0%}" for k, v in sorted(s.items(), key=lambda kv: -kv[1]))
    text = (
        f"MFU {mfu:.1%} < {target:.0%}. Step time by op family: {parts}. The matmul kernels "
        f"themselves ran at {prof['matmul_kernel_efficiency_vs_peak']:.0%} of the measured "
        f"peak (model FLOPs / matmul kernel time), so MFU is bounded by the matmul share of "
        f"the step times that efficiency; top op: {prof['top_ops'][0]['op']} "
        f"({prof['top_ops'][0]['share']:.0%})."
    )
    step = result["per_step_mean"]
    if step["padded_tokens"]:
        pad = 1 - step["tokens"] / step["padded_tokens"]
        text += (
            f" {pad:.0%} of the LM token positions computed are padding (each of the "
            f"model.length_buckets groups of a batch's distinct items is padded to its longest "
            f"text); MFU counts real tokens only."
        )
    return text


def train_plan(run, source: str):
    from distrec.train.loop import StagePlan

    return StagePlan("pretrain", {source: 1.0}, [source], 1, run.cfg.train.lr)


def end_to_end_model(run, pristine_lm: torch.nn.Module) -> torch.nn.Module:
    """What `distrec train` builds for end-to-end pretraining: the recommender with a LoRA on a
    fresh copy of the LM (PEFT edits the LM in place, so every model gets its own copy)."""
    import copy

    from distrec.train.adapters import add_lm_lora
    from distrec.train.stages import new_model

    run.lm = copy.deepcopy(pristine_lm)
    return add_lm_lora(new_model(run), run.cfg, "pretrain")


def bench_mode(run, model, source: str, steps: tuple[int, int, int], peak: float, profile: int):
    warmup, windows, per_window = steps
    label = f"{run.cfg.model.mode} mode"
    print(f"[perf] train ({label}): {warmup} warm-up + {windows}x{per_window} measured steps")
    result = time_training(
        run, model, train_plan(run, source), warmup, windows, per_window, peak, profile
    )
    m = result["median"]
    print(
        f"[perf] train ({label}): {m['users_per_s']:.1f} users/s, "
        f"{m['items_encoded_per_s']:.0f} items/s, {m['tokens_per_s']:.0f} tokens/s, "
        f"MFU {m['mfu']:.1%}, data wait {m['data_wait_fraction']:.1%}"
    )
    why = explain_mfu(result)
    if why:
        result["mfu_explanation"] = why
    return result
