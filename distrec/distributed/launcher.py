"""The launcher a run names (an Accelerate YAML) and the strategy it provides.

Checked before a run starts, next to `distrec.config.check_environment`; the live
accelerator is checked again at start-up (distrec/distributed/accelerator.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distrec.config import ConfigError, RunConfig


def launcher_strategy(path: Path) -> str:
    """The strategy an Accelerate YAML provides: ddp, zero2, zero3, zero3_offload, fsdp, single."""
    spec = yaml.safe_load(path.read_text()) or {}
    kind = str(spec.get("distributed_type", "NO")).upper()
    if kind != "DEEPSPEED":
        return {"MULTI_CPU": "ddp", "MULTI_GPU": "ddp", "FSDP": "fsdp"}.get(kind, "single")
    ds = spec.get("deepspeed_config") or {}
    stage, offload = ds.get("zero_stage"), ds.get("offload_optimizer_device", "none")
    if ds.get("deepspeed_config_file"):
        ds_file = (path.parent / ds["deepspeed_config_file"]).resolve()
        if not ds_file.exists():
            ds_file = Path(ds["deepspeed_config_file"])
        zero = json.loads(ds_file.read_text()).get("zero_optimization", {})
        stage = zero.get("stage")
        offload = (zero.get("offload_optimizer") or {}).get("device", "none")
    if stage == 3:
        return "zero3_offload" if offload not in (None, "none") else "zero3"
    return "zero2" if stage == 2 else f"zero{stage}"


def check_launcher(cfg: RunConfig, base: Path | None = None) -> None:
    """distributed.launcher (relative to `base`, default the cwd) exists and can provide
    distributed.strategy; raises ConfigError otherwise. No launcher named: nothing to check."""
    if cfg.distributed.launcher is None:
        return
    path = (base or Path.cwd()) / cfg.distributed.launcher
    if not path.exists():
        raise ConfigError(
            f"distributed.launcher={cfg.distributed.launcher!r}: no such file; see launch/ for templates"
        )
    provided = launcher_strategy(path)
    wanted = cfg.distributed.strategy
    if wanted not in ("auto", provided):
        raise ConfigError(
            f"distributed.strategy={wanted!r} but distributed.launcher={cfg.distributed.launcher!r} "
            f"provides {provided!r}, which cannot run it; pick a launch/ template for {wanted!r} "
            f"or set distributed.strategy={provided!r}"
        )
