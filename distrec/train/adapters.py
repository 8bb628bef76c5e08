"""Per-domain PEFT adapters (LoRA / AdaLoRA) on the recommender, and their export.

What an adapter wraps comes from the model (`lora_targets()`), never from layer-name
patterns here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_model

from distrec.config import ConfigError, RunConfig
from distrec.distributed.sharded_update import (
    GradientCapture,
    gathered_for_update,
    global_gradients,
    updates_need_gathering,
)
from distrec.train.trainer import Trainer, TrainHook
from distrec.utils.hashing import sha256_file


def lm_names(model: torch.nn.Module, cfg: RunConfig) -> list[str] | None:
    """The LM linear names an adapter wraps: end to end only (cached mode freezes the LM)."""
    tower = model.item_tower
    if cfg.model.mode != "end_to_end" or tower.lm is None:
        return None
    return tower.lm_lora_names(cfg.peft.lm_target_modules)


def peft_config(cfg: RunConfig, targets: list[str], total_steps: int, save: list[str] | None):
    """LoraConfig or AdaLoraConfig (`peft.method`) over the module names `targets`."""
    p = cfg.peft
    if p.method == "adalora":
        a = p.adalora
        # 0 means "derive from the run length": warm up 10%, settle the final 20%.
        tinit = a.tinit or int(0.1 * total_steps)
        tfinal = a.tfinal or int(0.2 * total_steps)
        return AdaLoraConfig(
            init_r=a.init_r,
            target_r=a.target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=a.delta_t,
            total_step=max(total_steps, tinit + tfinal + 1),
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules=targets,
            modules_to_save=save,
        )
    return LoraConfig(
        r=p.r,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        target_modules=targets,
        modules_to_save=save,
    )


def add_domain_adapter(
    model: torch.nn.Module, cfg: RunConfig, domain: str, total_steps: int
) -> PeftModel:
    """Freeze the base and add a new adapter named after `domain` (plus its ID rows): the
    model's own LoRA targets, the LM's linears too end to end."""
    check_adapter_name(model, domain)
    for param in model.parameters():
        param.requires_grad_(False)
    save = model.domain_modules(domain) or None
    targets = model.lora_targets(lm_names(model, cfg))
    return get_peft_model(model, peft_config(cfg, targets, total_steps, save), adapter_name=domain)


def add_lm_lora(model: torch.nn.Module, cfg: RunConfig, name: str) -> PeftModel:
    """Source training in end-to-end mode: a plain LoRA on the LM (merged afterwards) while
    the projection, user tower and ID tables train fully."""
    p = cfg.peft
    lm_only = model.lm_lora_targets(lm_names(model, cfg))
    config = LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=lm_only)
    frozen_lm = {id(q) for q in model.item_tower.lm.parameters()}
    peft_model = get_peft_model(model, config, adapter_name=name)
    for param in peft_model.parameters():
        if id(param) not in frozen_lm:  # the towers train fully; the LM only through LoRA
            param.requires_grad_(True)
    return peft_model


def check_adapter_name(model: torch.nn.Module, domain: str) -> None:
    """PEFT removes `.<adapter name>` from saved keys by substring: a domain name that
    starts a module name (e.g. `fc`, `q`) would corrupt the adapter file."""
    segments = {seg for name, _ in model.named_modules() for seg in name.split(".")}
    clash = sorted(seg for seg in segments if seg.startswith(domain))
    if clash:
        raise ConfigError(
            f"domain name {domain!r} cannot name a PEFT adapter: it starts module names {clash[:5]} "
            f"of the model; rename the domain (e.g. {domain + '-domain'!r})"
        )


# PEFT's RankAllocator keeps these per LoRA parameter name (exponential moving averages).
IMPORTANCE = ("ipt", "exp_avg_ipt", "exp_avg_unc")


class AdaLoraBudget(TrainHook):
    """Drives AdaLoRA's rank budget every optimizer step, on every backend.

    PEFT reads each LoRA parameter's gradient and masks parameters in place. On a
    sharded backend neither works as is (distrec.distributed.sharded_update says why),
    so there the gradients are captured during backward and made global, and the
    parameters are gathered whole while PEFT runs.
    """

    def __init__(self, peft_model: PeftModel, sharded: bool, max_grad_norm: float | None):
        self.base = peft_model.base_model
        self.max_grad_norm = max_grad_norm
        self.params = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
        self.capture = GradientCapture(self.params) if sharded else None

    @classmethod
    def for_run(cls, peft_model: PeftModel, cfg: RunConfig, accelerator) -> AdaLoraBudget:
        """The budget hook for this launch's backend."""
        return cls(peft_model, updates_need_gathering(accelerator), cfg.train.max_grad_norm)

    def on_step(self, trainer: Trainer, step: int) -> None:
        """AdaLoRA's `update_and_allocate(step)`; when sharded, on the captured gradients
        made global, with the LoRA parameters gathered whole."""
        if self.capture is None:
            self.base.update_and_allocate(step)
            return
        grads = global_gradients(self.capture.grads, trainer.model, self.max_grad_norm)
        params = list(self.params.values())
        with gathered_for_update(params):
            for name, p in self.params.items():
                p.grad = grads[name].to(p.dtype) if name in grads else None
            self.base.update_and_allocate(step)
            for p in params:
                p.grad = None
        self.capture.clear()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """AdaLoRA's importance scores (and its rank pattern, once set): without them a run
        resumed before the budget is final would mask other ranks than the uninterrupted one."""
        allocator = self.base.rankallocator
        state = {
            f"{kind}/{name}": t
            for kind in IMPORTANCE
            for name, t in getattr(allocator, kind).items()
        }
        pattern = self.base.peft_config[self.base.trainable_adapter_name].rank_pattern or {}
        for name, keep in pattern.items():
            state[f"rank_pattern/{name}"] = torch.tensor(keep, dtype=torch.uint8)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Importance scores and rank pattern back from a checkpoint."""
        allocator = self.base.rankallocator
        device = next(iter(self.params.values())).device
        pattern = {}
        for key, t in state.items():
            kind, name = key.split("/", 1)
            if kind == "rank_pattern":
                pattern[name] = [bool(v) for v in t.tolist()]
            else:
                getattr(allocator, kind)[name] = t.to(device)
        if pattern:
            self.base.peft_config[self.base.trainable_adapter_name].rank_pattern = pattern

    def close(self, trainer: Trainer) -> None:
        """Remove the gradient-capture hooks (sharded backends only)."""
        if self.capture is not None:
            self.capture.remove()


def export_adapter(peft_model: PeftModel, out: Path, domain: str, base_file: Path) -> Path:
    """adapters/<domain>/ in PEFT format plus a note of the exact base it belongs to."""
    peft_model.save_pretrained(str(out / "adapters"), selected_adapters=[domain])
    folder = out / "adapters" / domain
    (folder / "distrec.json").write_text(
        json.dumps(
            {"domain": domain, "base": str(base_file), "base_sha256": sha256_file(base_file)},
            indent=2,
        )
    )
    return folder


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    """The model's weights as safetensors at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path
