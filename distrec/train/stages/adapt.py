"""The adapt stage: the pretrained base adapted to the target with a LoRA adapter, by full
warm-start fine-tuning, or both with the better one on validation kept (`stages.adapt.mode`)."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from distrec.distributed.collectives import barrier
from distrec.eval.evaluate import UserRanks
from distrec.heads.base import better, target_heads
from distrec.train.adapters import AdaLoraBudget, add_domain_adapter, export_adapter, save_weights
from distrec.train.outputs import copy_stage_heads, write_stage_ranks
from distrec.train.stages.pipeline import Pipeline, base_weights
from distrec.train.stages.registry import register_stage
from distrec.train.stages.transfer import fit_towers, has_target
from distrec.train.trainer import StagePlan, planned_steps
from distrec.utils.progress import log


def adapt_enabled(cfg) -> bool:
    """The adapt stage runs when enabled, with a pretrained base and a target to adapt to."""
    return cfg.stages.adapt.enabled and cfg.stages.pretrain.enabled and has_target(cfg)


@register_stage("adapt", enabled=adapt_enabled, order=30)
def adapt(pipe: Pipeline) -> None:
    """One adapt model (lora or full), or both (`adapt_lora`, `adapt_full`, each its own
    stage record and checkpoints) and `adapt` = the one with the better validation
    eval.metric: chosen on the target's valid split, never on test."""
    ws = pipe.ws
    mode, metric = ws.cfg.stages.adapt.mode, ws.cfg.eval.metric
    if mode != "auto":
        pipe.results["adapt"] = {**ADAPTERS[mode](pipe, pipe.base, "adapt"), "mode": mode}
        return
    for m in ("lora", "full"):
        if f"adapt_{m}" not in pipe.results:
            start = copy.deepcopy(pipe.base)  # each starts from the same pretrained weights
            pipe.results[f"adapt_{m}"] = {**ADAPTERS[m](pipe, start, f"adapt_{m}"), "mode": m}
    lora, full = (pipe.results[f"adapt_{m}"]["valid"][metric] for m in ("lora", "full"))
    best = "full" if better(metric, full, lora) else "lora"
    chosen = pipe.results[f"adapt_{best}"]
    log(f"adapt (auto): {best} wins on valid {metric} ({chosen['valid'][metric]:.4f})")
    pipe.results["adapt"] = {**chosen, "mode": best, "selected_by": f"valid {metric}"}
    if ws.is_main:
        write_stage_ranks(ws.out, "adapt", stage_ranks(ws.out, f"adapt_{best}"))
        copy_stage_heads(ws.out, f"adapt_{best}", "adapt")
    barrier()


def set_adapt_id_dropout(pipe: Pipeline, model: nn.Module) -> None:
    """stages.adapt.id_dropout, if set, replaces the pretrained model's ID-row dropout."""
    rate = pipe.ws.cfg.stages.adapt.id_dropout
    if rate is not None:
        model.item_tower.id_dropout = rate


def adapt_plan(pipe: Pipeline, name: str) -> StagePlan:
    """Stage `name` on the target alone: stages.adapt's epochs, lr (else train.lr),
    train_fraction and heads."""
    cfg = pipe.ws.cfg
    st, target = cfg.stages, cfg.data.target
    return StagePlan(
        name,
        {target: 1.0},
        [target],
        st.adapt.epochs,
        st.adapt.lr or cfg.train.lr,
        train_fraction=st.adapt.train_fraction,
        heads=target_heads(cfg),
    )


def adapt_full(pipe: Pipeline, base: nn.Module, name: str) -> dict:
    """Warm-start fine-tuning of every tower parameter (the frozen LM gets a merged LoRA in
    end-to-end mode, as in pretraining); exported as merged safetensors."""
    ws, plan = pipe.ws, adapt_plan(pipe, name)
    set_adapt_id_dropout(pipe, base)
    for p in base.parameters():
        p.requires_grad_(True)
    if base.item_tower.lm is not None:
        for p in base.item_tower.lm.parameters():
            p.requires_grad_(False)
    trained, fitted = fit_towers(pipe, base, plan)
    record = pipe.record(trained, plan, fitted)
    if ws.is_main:
        save_weights(
            trained, ws.out / "export" / f"{ws.cfg.data.target}-full" / "model.safetensors"
        )
    barrier()
    return record


def adapt_lora(pipe: Pipeline, base: nn.Module, name: str) -> dict:
    """A new PEFT adapter (LoRA or AdaLoRA, `peft.method`) named after the target, plus its
    ID rows, on the frozen base; exported in PEFT format and merged."""
    ws, plan = pipe.ws, adapt_plan(pipe, name)
    target = ws.cfg.data.target
    set_adapt_id_dropout(pipe, base)
    peft_model = add_domain_adapter(base, ws.cfg, target, planned_steps(ws, plan))
    hooks = []
    if ws.cfg.peft.method == "adalora":
        hooks.append(AdaLoraBudget.for_run(peft_model, ws.cfg, ws.accelerator))
    trained, fitted = pipe.train(peft_model, plan, hooks)
    record = pipe.record(trained, plan, fitted)
    if ws.is_main:
        export_adapter(trained, ws.out, target, base_weights(ws.out))
        merged = trained.merge_and_unload()
        save_weights(merged, ws.out / "export" / target / "model.safetensors")
    barrier()
    return record


ADAPTERS = {"lora": adapt_lora, "full": adapt_full}


def stage_ranks(out: Path, stage: str) -> dict:
    """A finished stage's ranks, keyed as write_stage_ranks takes them."""
    frame = pd.read_parquet(out / "ranks" / f"{stage}.parquet")
    return {
        (domain, split): UserRanks(torch.tensor(g["user"].values), torch.tensor(g["rank"].values))
        for (domain, split), g in frame.groupby(["domain", "split"], sort=False)
    }
