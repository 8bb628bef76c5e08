"""Build the Accelerator from the run config; the one place that knows the backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

import torch

from distrec.config.errors import ConfigError
from distrec.config.schema import RunConfig
from distrec.distributed.collectives import world_size


def cpu_supports_fast_bf16() -> bool:
    """Whether /proc/cpuinfo lists AMX or AVX512 bf16 (False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """`auto` -> bf16 where the hardware runs it fast (CUDA bf16, CPU AMX/AVX512-BF16)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_fast_bf16() else "fp32"


def build_accelerator(cfg: RunConfig, trackers: Sequence = ()):
    """(Accelerator, resolved precision) for this launch: the backend is the launch
    template's, checked against distributed.strategy; `trackers`: unstarted Accelerate
    trackers that `accelerator.log` feeds once `init_trackers` has started them."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    precision = resolve_precision(cfg.train.precision)
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed and cfg.train.max_grad_norm is not None:
        # DeepSpeed's "auto" clipping reads this; the run config states it once.
        os.environ["ACCELERATE_GRADIENT_CLIPPING"] = str(cfg.train.max_grad_norm)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [
        # Without CUDA, Accelerate picks no backend under DeepSpeed and every rank
        # believes it is rank 0 of 1; naming gloo fixes that (only when launched).
        InitProcessGroupKwargs(
            backend="gloo" if launched and not torch.cuda.is_available() else None,
            timeout=timedelta(seconds=cfg.distributed.timeout_s),
        ),
        # Domain ID tables not in the batch get no gradient.
        DistributedDataParallelKwargs(find_unused_parameters=True),
    ]
    accelerator = Accelerator(
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=cfg.train.grad_accum,
        # Under torchrun without CUDA, Accelerate needs cpu=True to form a gloo
        # group; under DeepSpeed cpu=True would silently drop DeepSpeed.
        cpu=not torch.cuda.is_available() and not deepspeed,
        kwargs_handlers=handlers,
        log_with=list(trackers) or None,
    )
    if deepspeed:
        # We stream our own batches instead of handing Accelerate a DataLoader, so
        # the micro batch behind DeepSpeed's "auto" values is stated here.
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
    check_strategy(cfg, accelerator)
    return accelerator, precision


def live_strategy(accelerator) -> str:
    """The backend this launch runs, in distributed.strategy's terms: zero1/2/3,
    zero3_offload, fsdp, ddp or single."""
    kind = str(accelerator.distributed_type).split(".")[-1]
    if kind == "DEEPSPEED":
        plugin = accelerator.state.deepspeed_plugin
        stage = plugin.zero_stage
        offload = plugin.deepspeed_config.get("zero_optimization", {}).get("offload_optimizer", {})
        if stage == 3:
            return "zero3_offload" if offload.get("device", "none") != "none" else "zero3"
        return f"zero{stage}"
    if kind == "FSDP":
        return "fsdp"
    return "ddp" if world_size() > 1 else "single"


def check_strategy(cfg: RunConfig, accelerator) -> None:
    """ConfigError unless distributed.strategy is `auto` or what the launch provides (`ddp`
    also accepts a single process)."""
    wanted = cfg.distributed.strategy
    got = live_strategy(accelerator)
    if wanted not in ("auto", got) and not (wanted == "ddp" and got == "single"):
        raise ConfigError(
            f"distributed.strategy={wanted!r} but this launch provides {got!r}; launch with the "
            f"matching template in launch/ or set distributed.strategy=auto"
        )
