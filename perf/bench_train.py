"""Training throughput of distrec's own trainer step, cached and end-to-end LoRA.

Times `distrec.train.trainer.Trainer.train_epoch` (the product's step: loader wait, forward,
loss, backward, clipping, optimizer) through a `TrainHook` on every optimizer step: warm-up
steps are dropped and the rest is cut into windows; every rate is the median over windows.
FLOPs are analytic (`perf.flops`), MFU is against the peak measured in the same run
(`perf.bench_peak`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from distrec.models.packing import Packing
from distrec.train.trainer import StagePlan, Trainer, TrainHook
from distrec.train.workspace import Workspace
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
    """One training batch's size: what the rates and the FLOPs count."""

    users: int
    positions: int
    row_sq: int  # sum over rows of (real history length)^2: user-tower attention
    items: int  # item vectors computed (distinct items in end-to-end, whole catalog cached)
    tokens: int
    padded_tokens: int
    token_sq: int  # sum over encoded items of (real tokens)^2: LM attention


def batch_stats(
    batch: dict, catalog_size: int, buckets: int = 1, packing: Packing | None = None
) -> BatchStats:
    """One batch's shape. `buckets` (model.length_buckets) and `packing` (the item tower's) say
    how many token positions the LM computes: packed rows x capacity when the batch is
    packed, else the length groups' padded widths."""
    from distrec.models.packing import length_groups, packed_rows

    valid = batch["valid"]
    lengths = (batch["inputs"] > 0).sum(1)[valid]
    positions = int(((batch["targets"] > 0) & valid[:, None]).sum())
    if "attention_mask" in batch:
        per_item = batch["attention_mask"].sum(1)
        rows = packed_rows(per_item, max(1, buckets), packing, 0)
        padded = sum(len(g) * w for g, w in length_groups(per_item, buckets))
        return BatchStats(
            users=int(valid.sum()),
            positions=positions,
            row_sq=int((lengths**2).sum()),
            items=len(batch["items"]),
            tokens=int(per_item.sum()),
            padded_tokens=padded if rows is None else rows * packing.capacity,
            token_sq=int((per_item**2).sum()),
        )
    return BatchStats(int(valid.sum()), positions, int((lengths**2).sum()), catalog_size, 0, 0, 0)


class RecordingLoader:
    """The trainer's own loader, passed through unchanged, noting each batch's size."""

    def __init__(
        self,
        loader,
        catalog_sizes: dict[str, int],
        buckets: int = 1,
        packing: Packing | None = None,
    ) -> None:
        self.loader, self.catalog_sizes, self.buckets = loader, catalog_sizes, buckets
        self.packing = packing
        self.stats: list[BatchStats] = []

    def __iter__(self):
        for batch in self.loader:
            size = self.catalog_sizes[batch["domain"]]
            self.stats.append(batch_stats(batch, size, self.buckets, self.packing))
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


@dataclass(frozen=True)
class StepFlops:
    """Analytic training FLOPs of one step from its batch's shape (`perf.flops`)."""

    lm: dict | None
    towers: dict

    @classmethod
    def of(cls, trainer: Trainer) -> StepFlops:
        """The shapes of the model `trainer` trains (its LM only when it encodes text)."""
        cfg = trainer.ws.cfg.model
        model = trainer.accelerator.unwrap_model(trainer.model)
        lm = tower_lm(model) if cfg.mode == "end_to_end" else None
        towers = tower_shape(model, cfg.dim, cfg.user_tower.layers)
        return cls(lm_shape(lm) if lm is not None else None, towers)

    def __call__(self, s: BatchStats) -> float:
        flops = tower_train_flops(
            self.towers, s.items, s.positions, s.row_sq, s.items * s.positions
        )
        if self.lm is not None:
            flops += lm_train_flops(self.lm, s.tokens, s.token_sq)
        return flops


def tower_lm(model: torch.nn.Module) -> torch.nn.Module | None:
    """The LM inside the recommender's item tower (PEFT-wrapped or not), with its LoRA."""
    base = getattr(model, "base_model", model)
    return getattr(base, "model", base).item_tower.lm


@dataclass(frozen=True)
class BenchSteps:
    """Optimizer steps of one measurement: `warmup` dropped, `windows` x `per_window`
    measured, then `profile` profiled (after the measured ones, so never slowing a window)."""

    warmup: int
    windows: int
    per_window: int
    profile: int = 0

    @property
    def measured(self) -> int:
        """Steps inside the measured windows."""
        return self.windows * self.per_window

    @property
    def total(self) -> int:
        """Every step the trainer takes (the schedule's length)."""
        return self.warmup + self.measured + self.profile


class StepMarks(TrainHook):
    """After every optimizer step: (time, the epoch's data wait so far); steps the profiler."""

    def __init__(self, prof=None) -> None:
        self.prof = prof
        self.marks: list[tuple[float, float]] = []

    def on_step(self, trainer: Trainer, step: int) -> None:
        """Note the time and the data wait after the step's work has finished."""
        sync()
        self.marks.append((time.perf_counter(), trainer.state.epoch_wait_s))
        if self.prof is not None:
            self.prof.step()


class RunningLoss(TrainHook):
    """The epoch's running loss sum at every optimizer step (before the step's loss is added)."""

    def __init__(self) -> None:
        self.before: list[float] = []

    def on_step(self, trainer: Trainer, step: int) -> None:
        """Note the sum of the losses of the steps before this one (flushed: the trainer
        reads its loss sum at log points only)."""
        trainer.state.flush_loss()
        self.before.append(trainer.state.loss_sum())


def prepared_trainer(
    ws: Workspace, model, plan: StagePlan, total: int, hooks: Sequence[TrainHook] = ()
) -> Trainer:
    """The product's Trainer with its schedule over `total` steps (train.max_steps) and no
    checkpoints (`fit` would also evaluate and checkpoint, which is not training throughput)."""
    train = ws.cfg.train.model_copy(update={"max_steps": total, "checkpoint_every_steps": None})
    bench_ws = dataclasses.replace(ws, cfg=ws.cfg.model_copy(update={"train": train}))
    return Trainer(bench_ws, model, plan, hooks)


def record_batches(trainer: Trainer, total: int) -> RecordingLoader:
    """Wrap the trainer's loader to note each batch's shape; refuse an epoch under `total`."""
    ws = trainer.ws
    sizes = {n: d.num_items for n, d in ws.domains.items()}
    tower = trainer.accelerator.unwrap_model(trainer.model).item_tower
    packing = getattr(tower, "packing", None)  # the ID-only tower reads no text
    loader = RecordingLoader(trainer.loader, sizes, ws.cfg.model.length_buckets, packing)
    if len(loader) < total:
        raise ValueError(
            f"{trainer.plan.name}: an epoch has {len(loader)} batches, the benchmark needs "
            f"{total}; use fewer steps or a smaller train.batch_size"
        )
    trainer.loader = loader
    return loader


def distrec_step_losses(ws: Workspace, model, plan: StagePlan, steps: int) -> list[float]:
    """Each step's loss from the product's train_epoch (it keeps a running sum)."""
    running = RunningLoss()
    trainer = prepared_trainer(ws, model, plan, steps, [running])
    trainer.train_epoch()
    after = [*running.before[1:], trainer.state.loss_sum()]
    return [b - a for a, b in zip(running.before, after, strict=True)]


def time_training(
    ws: Workspace, model: torch.nn.Module, plan: StagePlan, steps: BenchSteps, peak_flops: float
) -> dict:
    """Run the product's train_epoch for warm-up + measured (+ profiled) steps and report
    median-of-window rates, data-wait share, MFU and (optionally) a profile."""
    prof = _profiler(steps.warmup + steps.measured, steps.profile) if steps.profile else None
    clock = StepMarks(prof)
    trainer = prepared_trainer(ws, model, plan, steps.total, [clock])
    loader = record_batches(trainer, steps.total)
    load_before = load_average()
    with PeakMemory() as mem, prof if prof is not None else contextlib.nullcontext():
        trainer.train_epoch()
    marks = clock.marks
    if len(marks) < steps.total:
        raise RuntimeError(
            f"{plan.name}: the trainer stopped after {len(marks)} of {steps.total} steps"
        )
    flops_of = StepFlops.of(trainer)
    rows = window_rows(marks, loader.stats, steps, flops_of)
    median, best = window_summary(rows, peak_flops)
    end = steps.warmup + steps.measured
    (t_a, wait_a), (t_b, wait_b) = marks[steps.warmup - 1], marks[end - 1]
    state = trainer.state
    result = {
        "mode": ws.cfg.model.mode,
        "precision": ws.precision,
        "steps": {"warmup": steps.warmup, "windows": steps.windows, "per_window": steps.per_window},
        "median": median,
        "best_window": best,
        "windows": rows,
        "data_wait_fraction_measured": (wait_b - wait_a) / (t_b - t_a),
        "per_step_mean": per_step_mean(loader.stats[steps.warmup : end], flops_of),
        "flops": {"formula": FORMULA, "lm": flops_of.lm, "towers": flops_of.towers},
        "peak_flops_per_s": peak_flops,
        "mean_loss": state.running_loss(),
        "memory": mem.report(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    if prof is not None:
        wall = marks[-1][0] - marks[-1 - steps.profile][0]
        flops = sum(flops_of(s) for s in loader.stats[-steps.profile :])
        result["profile"] = summarize_profile(prof, wall, flops, peak_flops, steps.profile)
    return result


def window_rows(
    marks: list[tuple[float, float]],
    stats: list[BatchStats],
    steps: BenchSteps,
    flops_of: Callable[[BatchStats], float],
) -> list[dict]:
    """Each measured window's rates: steps, users, items, tokens, FLOPs per second, data wait."""
    rows = []
    for w in range(steps.windows):
        first = steps.warmup + w * steps.per_window
        last = first + steps.per_window - 1
        (t0, wait0), (t1, wait1) = marks[first - 1], marks[last]
        window = stats[first : last + 1]
        seconds = t1 - t0
        rows.append(
            {
                "seconds": seconds,
                "steps_per_s": steps.per_window / seconds,
                "users_per_s": sum(s.users for s in window) / seconds,
                "items_encoded_per_s": sum(s.items for s in window) / seconds,
                "tokens_per_s": sum(s.tokens for s in window) / seconds,
                "padded_tokens_per_s": sum(s.padded_tokens for s in window) / seconds,
                "model_flops_per_s": sum(flops_of(s) for s in window) / seconds,
                "data_wait_fraction": (wait1 - wait0) / seconds,
            }
        )
    return rows


def window_summary(rows: list[dict], peak_flops: float) -> tuple[dict, dict]:
    """The median over windows of every rate, and the fastest window, each with its MFU."""
    keys = [k for k in rows[0] if k != "seconds"]
    median = {k: median_windows([r[k] for r in rows])["median"] for k in keys}
    median["mfu"] = median["model_flops_per_s"] / peak_flops
    # On a shared machine contention only ever slows a window down: the fastest window is
    # the load-robust estimate, reported beside the median.
    best = dict(max(rows, key=lambda r: r["users_per_s"]))
    best["mfu"] = best["model_flops_per_s"] / peak_flops
    return median, best


def per_step_mean(stats: list[BatchStats], flops_of: Callable[[BatchStats], float]) -> dict:
    """Mean batch shape (and FLOPs) of the measured steps."""
    return {
        "users": _mean([s.users for s in stats]),
        "positions": _mean([s.positions for s in stats]),
        "items_encoded": _mean([s.items for s in stats]),
        "tokens": _mean([s.tokens for s in stats]),
        "padded_tokens": _mean([s.padded_tokens for s in stats]),
        "model_flops": _mean([flops_of(s) for s in stats]),
    }


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


def explain_mfu(result: dict, target: float = 0.35) -> str | None:
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
            f" {pad:.0%} of the LM token positions computed are padding (the tails of packed "
            f"rows under model.packing, else each model.length_buckets group padded to its "
            f"longest text); MFU counts real tokens only."
        )
    return text


def train_plan(ws: Workspace, source: str) -> StagePlan:
    """The pretraining stage's plan on `source` alone, at the run's learning rate."""
    return StagePlan("pretrain", {source: 1.0}, [source], 1, ws.cfg.train.lr)


def end_to_end_model(ws: Workspace, pristine_lm: torch.nn.Module) -> torch.nn.Module:
    """What `distrec train` builds for end-to-end pretraining: the recommender with a LoRA on a
    fresh copy of the LM (PEFT edits the LM in place, so every model gets its own copy)."""
    from distrec.train.adapters import add_lm_lora
    from distrec.train.stages.pipeline import new_model

    text = dataclasses.replace(ws.text, lm=copy.deepcopy(pristine_lm))
    return add_lm_lora(new_model(dataclasses.replace(ws, text=text)), ws.cfg, "pretrain")


def bench_mode(
    ws: Workspace, model, source: str, steps: tuple[int, int, int], peak: float, profile: int
) -> dict:
    """`time_training` of one mode on `source`, printed, with the MFU explained when low."""
    warmup, windows, per_window = steps
    label = f"{ws.cfg.model.mode} mode"
    print(f"[perf] train ({label}): {warmup} warm-up + {windows}x{per_window} measured steps")
    bench_steps = BenchSteps(warmup, windows, per_window, profile)
    result = time_training(ws, model, train_plan(ws, source), bench_steps, peak)
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
