"""What a user would train on the target alone, on the same split: popularity, an ID-only
sequential model (SASRec-style) and a text model from scratch (`stages.baselines`)."""

from __future__ import annotations

from distrec.eval.evaluate import UserRanks, eval_cases, rank_sharded
from distrec.train.stages.pipeline import Pipeline, new_model
from distrec.train.stages.registry import register_stage
from distrec.train.stages.transfer import fit_towers
from distrec.train.trainer import StagePlan
from distrec.utils.progress import log


def baseline(name: str):
    """Enabled when `name` is in stages.baselines and the run has a target."""
    return lambda cfg: name in cfg.stages.baselines and cfg.data.target is not None


@register_stage("baseline_popularity", enabled=baseline("popularity"), order=40)
def popularity(pipe: Pipeline) -> None:
    """Training-count popularity, ranked under the same protocol (history masked, half ties)."""
    ws, target = pipe.ws, pipe.ws.cfg.data.target
    d = ws.domains[target]
    counts = d.train_counts

    def score(history, last):
        return counts.expand(history.shape[0], -1)

    def ranks(name: str, split: str) -> UserRanks:
        cases = eval_cases(d.sequences(), split, ws.cfg.eval.max_users)
        return rank_sharded(cases, score, pipe.evaluator.ranking(d, lists=True), ws.shard())

    record = pipe.ranked_record("baseline_popularity", [target], ranks)
    log(f"baseline_popularity: test ndcg@10 {record['test']['ndcg@10']:.4f}")
    pipe.results["baseline_popularity"] = record


@register_stage("baseline_id_target_only", enabled=baseline("id_target_only"), order=41)
def id_target_only(pipe: Pipeline) -> None:
    """The ID-only model with its own tuned lr, dropout, score and temperature."""
    cfg, target = pipe.ws.cfg, pipe.ws.cfg.data.target
    st = cfg.stages
    plan = StagePlan(
        "baseline_id_target_only", {target: 1.0}, [target], st.id_baseline_epochs, st.id_baseline_lr
    )
    model, fitted = pipe.train(id_baseline_model(pipe), plan)
    pipe.results[plan.name] = pipe.record(model, plan, fitted)


def id_baseline_model(pipe: Pipeline):
    """A fresh ID-only model with the ID baseline's score, temperature and dropout."""
    cfg = pipe.ws.cfg
    st = cfg.stages
    model_cfg = cfg.model.model_copy(
        update={
            "score": st.id_baseline_score or cfg.model.score,
            "temperature": st.id_baseline_temperature or cfg.model.temperature,
        }
    )
    return new_model(pipe.ws, "id_only", cfg=model_cfg, dropout=st.id_baseline_dropout)


@register_stage("baseline_text_target_only", enabled=baseline("text_target_only"), order=42)
def text_target_only(pipe: Pipeline) -> None:
    """A fresh text model trained on the target alone, to convergence."""
    cfg, target = pipe.ws.cfg, pipe.ws.cfg.data.target
    plan = StagePlan(
        "baseline_text_target_only",
        {target: 1.0},
        [target],
        cfg.stages.text_baseline_epochs,
        cfg.stages.pretrain.lr or cfg.train.lr,
    )
    model, fitted = fit_towers(pipe, new_model(pipe.ws), plan)
    pipe.results[plan.name] = pipe.record(model, plan, fitted)
