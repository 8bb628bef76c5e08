"""The distill stage (stages.distill): the run's adapted model (the teacher) taught to a
smaller student on the target, and (`control`) the same student trained without it, each
with its serving cost beside the teacher's (distrec.train.serving): target parameters and
users/s at inference."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from safetensors.torch import load_model
from torch import nn

from distrec.config import ConfigError, RunConfig
from distrec.config.schema import ModelConfig, UserTowerConfig
from distrec.distributed.collectives import barrier
from distrec.heads.base import target_heads
from distrec.train.adapters import save_weights
from distrec.train.distill import Distillation
from distrec.train.evaluation import reads_text
from distrec.train.serving import serving_costs
from distrec.train.stages.adapt import adapt_enabled
from distrec.train.stages.pipeline import Pipeline, new_model
from distrec.train.stages.registry import register_stage
from distrec.train.stages.transfer import fit_towers
from distrec.train.trainer import StagePlan
from distrec.utils.progress import log

TIMING_REPEATS = 5


def distill_enabled(cfg: RunConfig) -> bool:
    """Runs when enabled and the adapt stage (which makes the teacher) runs."""
    return cfg.stages.distill.enabled and adapt_enabled(cfg)


def student_model_config(cfg: RunConfig) -> ModelConfig:
    """The run's model section with the student's shape, score and temperature."""
    st, m = cfg.stages.distill.student, cfg.model
    tower = UserTowerConfig(
        layers=st.layers,
        heads=st.heads,
        dropout=m.user_tower.dropout if st.dropout is None else st.dropout,
        domain_embedding=m.user_tower.domain_embedding,
    )
    update = {
        "architecture": st.architecture,
        "dim": st.dim,
        "user_tower": tower,
        "score": st.score or m.score,
        "temperature": st.temperature or m.temperature,
        "domain_adversarial": None,
    }
    return m.model_copy(update=update)


def teacher_path(pipe: Pipeline, stage: str) -> Path:
    """The exported weights of the teacher stage (adapt: the mode it selected)."""
    if stage not in pipe.results:
        raise ConfigError(
            f"stages.distill.teacher={stage!r} has not run in this run; enable it (stages.adapt, "
            f"mode auto for adapt_lora/adapt_full) or pick another teacher"
        )
    return teacher_file(pipe.ws.out, pipe.ws.cfg.data.target, pipe.results[stage], stage)


def teacher_file(out: Path, target: str, record: dict, stage: str) -> Path:
    """export/<target>/ (a merged LoRA) or export/<target>-full/ (full fine-tuning): where
    the adapt stage `stage` (its `record`) exported its model."""
    mode = record.get("mode") or stage.removeprefix("adapt_")
    folder = target if mode == "lora" else f"{target}-full"
    return out / "export" / folder / "model.safetensors"


def load_teacher(pipe: Pipeline, stage: str) -> tuple[nn.Module, Path]:
    """The teacher model, rebuilt and read from its export, and the weights' path."""
    path = teacher_path(pipe, stage)
    return load_weights(pipe.ws, path), path


def load_weights(ws, path: Path) -> nn.Module:
    """A model of the run's model section with the weights at `path` (and an LM of its own
    end to end: loading must not overwrite the LM the run's other models share)."""
    model = own_lm(new_model(ws))
    load_model(model, str(path))
    return model


def own_lm(model: nn.Module) -> nn.Module:
    """`model` with a private copy of the workspace's LM (end to end), so training or
    loading it leaves the shared one as it was."""
    if getattr(model.item_tower, "lm", None) is not None:
        model.item_tower.lm = copy.deepcopy(model.item_tower.lm)
    return model


def train_student(pipe: Pipeline, name: str, term: Distillation | None) -> tuple[nn.Module, dict]:
    """A fresh student trained on the target (with the distillation term, or alone), and
    its stage record."""
    cfg, dc = pipe.ws.cfg, pipe.ws.cfg.stages.distill
    plan = StagePlan(
        name,
        {cfg.data.target: 1.0},
        [cfg.data.target],
        dc.epochs,
        dc.lr or cfg.train.lr,
        train_fraction=dc.train_fraction,
        heads=target_heads(cfg),
    )
    student = own_lm(new_model(pipe.ws, cfg=student_model_config(cfg), dropout=dc.student.dropout))
    hooks = [term] if term is not None else []
    if reads_text(student):
        trained, fitted = fit_towers(pipe, student, plan, hooks)
    else:  # an ID-only student has no LM to put a LoRA on
        trained, fitted = pipe.train(student, plan, hooks)
    return trained, pipe.record(trained, plan, fitted)


@register_stage("distill", enabled=distill_enabled, order=35)
def distill(pipe: Pipeline) -> None:
    """The distilled student (`distill`) and, with `control`, the student alone
    (`distill_alone`); each record carries its and the teacher's serving cost."""
    ws, dc = pipe.ws, pipe.ws.cfg.stages.distill
    teacher, source = load_teacher(pipe, dc.teacher)
    runs = {"distill": Distillation(ws, teacher, dc, source)}
    if dc.control:
        runs["distill_alone"] = None
    for name, term in runs.items():
        if name in pipe.results:
            continue
        student, record = train_student(pipe, name, term)
        # Timed beside the teacher, interleaved, right after training: one load for both.
        cost = serving_costs(ws, {"student": student, "teacher": teacher}, TIMING_REPEATS)
        record.update(teacher=dc.teacher, student=cost["student"], teacher_serving=cost["teacher"])
        s, t = cost["student"], cost["teacher"]
        log(
            f"{name}: test ndcg@10 {record['test']['ndcg@10']:.4f}; {s['params']:.0f} params "
            f"({s['params'] / t['params']:.1%} of the teacher's), {s['users_per_s']:.0f} users/s "
            f"({s['users_per_s'] / t['users_per_s']:.1f}x the teacher's)"
        )
        if ws.is_main:
            export_student(ws, student, name)
        barrier()
        pipe.results[name] = record


def export_student(ws, student: nn.Module, name: str) -> None:
    """export/<target>-<stage>/: the student's weights and the model section that rebuilds
    it (`new_model(ws, cfg=...)`, or `distrec.train.inference`)."""
    folder = ws.out / "export" / f"{ws.cfg.data.target}-{name}"
    save_weights(student, folder / "model.safetensors")
    section = student_model_config(ws.cfg).model_dump(mode="json")
    (folder / "model.yaml").write_text(yaml.safe_dump({"model": section}, sort_keys=False))
