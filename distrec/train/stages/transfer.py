"""The transfer stages: pretrain on the sources, evaluate zero-shot on the target."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from distrec.config import RunConfig
from distrec.train.adapters import add_lm_lora, save_weights
from distrec.train.alignment import DomainAlignment, attach_critic, detach_critic, domain_probe
from distrec.train.stages.pipeline import Pipeline, base_weights, new_model
from distrec.train.stages.registry import register_stage
from distrec.train.state import FitResult
from distrec.train.trainer import StagePlan, TrainHook
from distrec.utils.progress import log


def fit_towers(
    pipe: Pipeline, model: nn.Module, plan: StagePlan, hooks: Sequence[TrainHook] = ()
) -> tuple[nn.Module, FitResult]:
    """Train every trainable tower parameter; in end-to-end mode the frozen LM gets a LoRA
    that is merged into the weights afterwards (the next stage starts from it)."""
    cfg = pipe.ws.cfg
    e2e = cfg.model.mode == "end_to_end" and cfg.peft.method != "none"
    if e2e:
        model = add_lm_lora(model, cfg, plan.name.replace("_", "-"))
    model, result = pipe.train(model, plan, hooks)
    if e2e:
        model = model.merge_and_unload()
    return model, result


def has_target(cfg: RunConfig) -> bool:
    """Whether the run names a target domain (data.target)."""
    return cfg.data.target is not None


@register_stage("pretrain", enabled=lambda cfg: cfg.stages.pretrain.enabled, order=10)
def pretrain(pipe: Pipeline) -> None:
    """A text model trained on the source mixture; exported as the base of every adapter."""
    cfg = pipe.ws.cfg
    plan = StagePlan(
        "pretrain",
        {s: cfg.data.mixture.get(s, 1.0) for s in cfg.data.sources},
        cfg.data.sources,
        cfg.stages.pretrain.epochs,
        cfg.stages.pretrain.lr or cfg.train.lr,
        train_fraction=cfg.stages.pretrain.train_fraction,
        heads=cfg.model.heads,
    )
    model, hooks = new_model(pipe.ws), []
    if cfg.model.domain_adversarial is not None:
        attach_critic(model, pipe.ws)
        hooks.append(DomainAlignment(pipe.ws, cfg.model.domain_adversarial))
    base, fitted = fit_towers(pipe, model, plan, hooks)
    detach_critic(base)
    if pipe.ws.is_main:
        save_weights(base, base_weights(pipe.ws.out))
    record = pipe.record(base, plan, fitted)
    if has_target(cfg) and hasattr(base.item_tower, "content"):
        record["domain_probe"] = domain_probe(base, pipe.ws, cfg.seed)
        log(
            f"pretrain: a fresh domain classifier's balanced accuracy on held-out source/target "
            f"items {record['domain_probe']['accuracy']:.1%} (chance 50%)"
        )
    pipe.results["pretrain"] = record
    pipe.base = base


@register_stage(
    "zero_shot",
    enabled=lambda cfg: cfg.stages.zero_shot and cfg.stages.pretrain.enabled and has_target(cfg),
    order=20,
)
def zero_shot(pipe: Pipeline) -> None:
    """The pretrained model on the target, untouched."""
    cfg = pipe.ws.cfg
    plan = StagePlan("zero_shot", {}, [cfg.data.target], 0, cfg.train.lr, heads=cfg.model.heads)
    pipe.results["zero_shot"] = pipe.record(pipe.base, plan, None)
