"""The distill stage (stages.distill): the run's adapted model (the teacher) taught to a
smaller student on the target, and (`control`) the same student trained without it, each
with its serving cost beside its metrics: trainable parameters and users/s at inference."""

from __future__ import annotations

import statistics
import time

import torch
import yaml
from safetensors.torch import load_model
from torch import nn

from distrec.config import ConfigError, RunConfig
from distrec.config.schema import ModelConfig, UserTowerConfig
from distrec.data.collate import history_batch
from distrec.distributed.collectives import barrier
from distrec.eval.evaluate import eval_cases, history_mask
from distrec.heads.base import target_heads
from distrec.models.io import UserQuery
from distrec.models.towers import id_table_key
from distrec.train.adapters import save_weights
from distrec.train.distill import Distillation
from distrec.train.evaluation import reads_text
from distrec.train.stages.adapt import adapt_enabled
from distrec.train.stages.pipeline import Pipeline, new_model
from distrec.train.stages.registry import register_stage
from distrec.train.stages.transfer import fit_towers
from distrec.train.trainer import StagePlan
from distrec.utils.progress import log

TIMING_REPEATS = 3


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


def teacher_path(pipe: Pipeline, stage: str):
    """The exported weights of the teacher stage (adapt: the mode it selected)."""
    cfg = pipe.ws.cfg
    if stage not in pipe.results:
        raise ConfigError(
            f"stages.distill.teacher={stage!r} has not run in this run; enable it (stages.adapt, "
            f"mode auto for adapt_lora/adapt_full) or pick another teacher"
        )
    mode = pipe.results[stage].get("mode") or stage.removeprefix("adapt_")
    folder = cfg.data.target if mode == "lora" else f"{cfg.data.target}-full"
    return pipe.ws.out / "export" / folder / "model.safetensors"


def load_teacher(pipe: Pipeline, stage: str) -> tuple[nn.Module, object]:
    """The teacher model, rebuilt and read from its export, and the weights' path."""
    path = teacher_path(pipe, stage)
    teacher = new_model(pipe.ws)
    load_model(teacher, str(path))
    return teacher, path


def target_parameters(model: nn.Module, target: str) -> int:
    """Parameters that score the target: every trainable-kind parameter except other
    domains' ID tables (and a frozen LM, which a cached model does not hold)."""
    own = id_table_key(target)
    lm = {id(p) for p in model.item_tower.lm.parameters()} if model.item_tower.lm else set()
    total = 0
    for name, p in model.named_parameters():
        other_table = ".ids." in name and f".ids.{own}." not in name
        if id(p) not in lm and not other_table:
            total += p.numel()
    return total


def serving_cost(pipe: Pipeline, model: nn.Module) -> dict[str, float]:
    """Target parameters and inference speed: users/s of recommending a top-10 to every
    test-split user (catalog encoding, user tower, scores, history masked), each rank its
    shard, timed between barriers; the fastest of TIMING_REPEATS and the median."""
    ws = pipe.ws
    d = ws.domains[ws.cfg.data.target]
    rank, world = ws.rank_world
    cases = eval_cases(d.sequences(), "test")
    mine = cases[rank::world]
    batches = [
        (
            history_batch([c.history for c in chunk], ws.cfg.data.max_history),
            history_mask(chunk, d.num_items),
        )
        for chunk in (
            mine[i : i + ws.cfg.eval.batch_size]
            for i in range(0, len(mine), ws.cfg.eval.batch_size)
        )
    ]
    speeds = []
    for _ in range(TIMING_REPEATS):
        barrier()
        start = time.perf_counter()
        recommend_top(pipe, model, d, batches)
        barrier()
        speeds.append(len(cases) / (time.perf_counter() - start))
    return {
        "params": float(target_parameters(model, d.name)),
        "users_per_s": max(speeds),
        "users_per_s_median": statistics.median(speeds),
    }


@torch.no_grad()
def recommend_top(pipe: Pipeline, model: nn.Module, d, batches: list, k: int = 10) -> None:
    """Each batch's top-k unseen items (what a serving call computes), results discarded."""
    device = pipe.ws.device
    model.eval()
    with pipe.ws.accelerator.autocast():
        catalog = pipe.evaluator.catalog(model, d)
        for (history, last), seen in batches:
            query = UserQuery(d.name, history.to(device), last.to(device), catalog.vectors)
            scores = model.score(model(query), catalog)
            scores.masked_fill_(seen.to(device), float("-inf"))
            scores[:, 0] = float("-inf")
            scores.topk(k, dim=1)


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
    student = new_model(pipe.ws, cfg=student_model_config(cfg), dropout=dc.student.dropout)
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
    teacher_cost = serving_cost(pipe, teacher.to(ws.device))
    runs = {"distill": Distillation(ws, teacher, dc, source)}
    if dc.control:
        runs["distill_alone"] = None
    for name, term in runs.items():
        if name in pipe.results:
            continue
        student, record = train_student(pipe, name, term)
        record.update(
            teacher=dc.teacher,
            student=serving_cost(pipe, student),
            teacher_serving=teacher_cost,
        )
        s, t = record["student"], teacher_cost
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
