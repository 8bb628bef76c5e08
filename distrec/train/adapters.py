"""Per-domain PEFT adapters (LoRA / AdaLoRA) on the recommender, and their export."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_model

from distrec.config.errors import ConfigError
from distrec.config.schema import RunConfig
from distrec.models.encoder import default_lm_targets
from distrec.models.towers import id_table_key
from distrec.utils.hashing import sha256_file

# The pooler's output is never used (we pool ourselves): adapting it would leave
# parameters without gradients, which AdaLoRA's importance scores cannot take.
LM_PREFIX = r"item_tower\.lm\.(?!pooler)"
HEAD_TARGETS = r"item_tower\.proj\.(fc_in|fc_out)|user_tower\.blocks\.\d+\.(q|k|v|o|fc1|fc2)"


def target_regex(model: torch.nn.Module, cfg: RunConfig, include_lm: bool) -> str:
    """Projection + user-tower linears always; the LM's attention/MLP linears in end-to-end mode."""
    parts = [HEAD_TARGETS]
    lm = getattr(model.item_tower, "lm", None)
    if include_lm and lm is not None:
        names = cfg.peft.lm_target_modules or default_lm_targets(lm)
        parts.append(LM_PREFIX + r".*\.(" + "|".join(map(str, names)) + ")")
    return r".*(" + "|".join(parts) + r")$"


def lm_only_regex(model: torch.nn.Module, cfg: RunConfig) -> str:
    names = cfg.peft.lm_target_modules or default_lm_targets(model.item_tower.lm)
    return r".*" + LM_PREFIX + r".*\.(" + "|".join(names) + r")$"


def peft_config(cfg: RunConfig, targets: str, total_steps: int, save: list[str] | None):
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
    model: torch.nn.Module, cfg: RunConfig, domain: str, total_steps: int, include_lm: bool
) -> PeftModel:
    """Freeze the base and add a new adapter named after `domain` (plus its ID rows)."""
    check_adapter_name(model, domain)
    for param in model.parameters():
        param.requires_grad_(False)
    save = [f"ids.{id_table_key(domain)}"] if model.item_tower.ids is not None else None
    config = peft_config(cfg, target_regex(model, cfg, include_lm), total_steps, save)
    return get_peft_model(model, config, adapter_name=domain)


def add_lm_lora(model: torch.nn.Module, cfg: RunConfig, name: str) -> PeftModel:
    """Source training in end-to-end mode: a plain LoRA on the LM (merged afterwards) while
    the projection, user tower and ID tables train fully."""
    p = cfg.peft
    config = LoraConfig(
        r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=lm_only_regex(model, cfg)
    )
    peft_model = get_peft_model(model, config, adapter_name=name)
    for param_name, param in peft_model.named_parameters():
        if ".lm." not in param_name:
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


class AdaLoraBudget:
    """on_step callback that drives AdaLoRA's rank budget every optimizer step, on every
    backend.

    PEFT reads each LoRA parameter's gradient and masks parameters in place. Under
    DeepSpeed neither works as is: the engine's step has already zeroed (ZeRO-2) or
    partitioned (ZeRO-3) the gradients, and ZeRO-3's parameters are empty shards. So
    with `sharded` the gradients are captured by tensor hooks during backward (summed
    over micro-batches, averaged over ranks, clipped as the engine clipped them), the
    parameters are gathered whole while PEFT runs, and its masking is written back to
    the shards and to the optimizer's fp32 master copy, which would undo it next step.
    """

    def __init__(self, peft_model: PeftModel, sharded: bool, max_grad_norm: float | None):
        self.base = peft_model.base_model
        self.max_grad_norm = max_grad_norm
        self.params = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
        self.grads: dict[str, torch.Tensor] = {}
        self.hooks = []
        if sharded:
            for name, p in self.params.items():
                if p.requires_grad:
                    self.hooks.append(p.register_hook(self._capture(name)))

    def _capture(self, name: str):
        def hook(grad: torch.Tensor) -> None:
            g = grad.detach().float()
            self.grads[name] = self.grads[name] + g if name in self.grads else g.clone()

        return hook

    def __call__(self, wrapped: torch.nn.Module, global_step: int) -> None:
        if not self.hooks:
            self.base.update_and_allocate(global_step)
            return
        grads = self._global_grads(wrapped)
        import deepspeed
        from deepspeed.utils import safe_set_full_fp32_param

        params = list(self.params.values())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            for name, p in self.params.items():
                p.grad = grads[name].to(p.dtype) if name in grads else None
            self.base.update_and_allocate(global_step)
            for p in params:
                p.grad = None
                if p.requires_grad:
                    safe_set_full_fp32_param(p, p.data)
        self.grads.clear()

    def _global_grads(self, wrapped: torch.nn.Module) -> dict[str, torch.Tensor]:
        world = dist.get_world_size() if dist.is_initialized() else 1
        norm = wrapped.get_global_grad_norm() if hasattr(wrapped, "get_global_grad_norm") else None
        scale = 1.0 / world
        if self.max_grad_norm and norm is not None:
            # torch's and DeepSpeed's clipping rule: scale by max_norm / (norm + 1e-6) when < 1
            scale *= min(1.0, self.max_grad_norm / (float(norm) + 1e-6))
        for g in self.grads.values():
            if world > 1:
                dist.all_reduce(g)
            g.mul_(scale)
        return self.grads

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []


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
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path
