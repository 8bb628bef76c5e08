"""Checks that need several sections at once; `RunConfig` runs them after each section's own.

Each raises ValueError (pydantic wraps it) naming the keys, the values and the fix.
"""

from __future__ import annotations

from distrec.config.data import DataConfig
from distrec.config.model import ModelConfig, PeftConfig
from distrec.config.runtime import TuneConfig
from distrec.config.training import StagesConfig


def check_consistency(
    *,
    data: DataConfig,
    model: ModelConfig,
    peft: PeftConfig,
    stages: StagesConfig,
    tune: TuneConfig,
) -> None:
    """Every cross-section check, in a fixed order (the first failure is reported)."""
    check_stages_have_data(stages, data)
    check_mode_allows_lm_adapters(model, peft)
    check_tuned_stage_is_one_model(tune, stages)
    check_zero_shot_has_pretraining(stages)
    check_transfer_techniques(model, data)
    check_distill_has_a_teacher(stages)


def check_stages_have_data(stages: StagesConfig, data: DataConfig) -> None:
    """Pretraining needs sources; the target stages need a target."""
    if stages.pretrain.enabled and data.domains and not data.sources:
        raise ValueError(
            "stages.pretrain is enabled but data.sources is empty; list source domains or set "
            "stages.pretrain.enabled=false"
        )
    needs_target = stages.zero_shot or stages.adapt.enabled or stages.baselines
    if needs_target and data.target is None and data.domains:
        raise ValueError(
            "stages zero_shot/adapt/baselines need data.target; name the target domain or disable them"
        )


def check_mode_allows_lm_adapters(model: ModelConfig, peft: PeftConfig) -> None:
    """LM adapters need an LM that runs in the step (end-to-end mode)."""
    if model.mode == "cached" and peft.lm_target_modules:
        raise ValueError(
            f"peft.lm_target_modules={peft.lm_target_modules} but model.mode=cached freezes the LM; "
            f"use model.mode=end_to_end or drop peft.lm_target_modules"
        )


def check_tuned_stage_is_one_model(tune: TuneConfig, stages: StagesConfig) -> None:
    """A sweep of the adapt stage must sweep one adapt model, not auto's two."""
    if tune.search_space and tune.stage == "adapt" and stages.adapt.mode == "auto":
        raise ValueError(
            "tune.stage=adapt with stages.adapt.mode=auto: auto trains two adapt models "
            "(adapt_lora, adapt_full); sweep one of them with stages.adapt.mode=lora or full"
        )


def check_zero_shot_has_pretraining(stages: StagesConfig) -> None:
    """Zero-shot evaluates the pretrained model, so pretraining must run."""
    if stages.zero_shot and not stages.pretrain.enabled:
        raise ValueError(
            "stages.zero_shot=true evaluates the pretrained model, but stages.pretrain.enabled=false; "
            "enable pretraining or set stages.zero_shot=false"
        )


def check_distill_has_a_teacher(stages: StagesConfig) -> None:
    """Distillation teaches the adapt stage's model, so adapt must run (in auto mode for an
    adapt_lora / adapt_full teacher, the only mode that trains both)."""
    dc = stages.distill
    if not dc.enabled:
        return
    if not (stages.adapt.enabled and stages.pretrain.enabled):
        raise ValueError(
            "stages.distill is enabled but its teacher, the adapt stage, does not run; enable "
            "stages.pretrain and stages.adapt or set stages.distill.enabled=false"
        )
    if dc.teacher != "adapt" and stages.adapt.mode != "auto":
        raise ValueError(
            f"stages.distill.teacher={dc.teacher!r} needs stages.adapt.mode=auto (it trains "
            f"adapt_lora and adapt_full); with mode={stages.adapt.mode!r} use teacher: adapt"
        )


def check_transfer_techniques(model: ModelConfig, data: DataConfig) -> None:
    """Alignment needs a source and a target; a knowledge graph needs edges from somewhere;
    both need the item tower's text path, which the ID-only architecture does not have."""
    for key, value in (("domain_adversarial", model.domain_adversarial), ("kg", model.kg)):
        if value is not None and model.architecture == "id_only":
            raise ValueError(
                f"model.{key} works on the item tower's text path, but model.architecture="
                f"id_only has none; use two_tower or set model.{key}=null"
            )
    if model.domain_adversarial is not None and data.domains and not (data.target and data.sources):
        raise ValueError(
            "model.domain_adversarial aligns sources with the target, but data.sources/"
            "data.target are not both set; name them or set model.domain_adversarial=null"
        )
    edges = any(d.kg_fields or d.kg_triples for d in data.domains)
    if model.kg is not None and data.domains and not edges:
        raise ValueError(
            "model.kg is set but no domain gives graph edges; add data.domains[].kg_fields "
            "(relation -> item field, e.g. {genre: genre}) or kg_triples, or set model.kg=null"
        )
