"""What a user would train on the target alone, on the same split: popularity, an ID-only
sequential model (SASRec-style), a text model from scratch, and the rating references
(`stages.baselines`). The trained baselines train the target's heads (stages.adapt.heads)."""

from __future__ import annotations

import torch

from distrec.config import ConfigError
from distrec.eval.evaluate import UserRanks, eval_cases, rank_sharded
from distrec.eval.pointwise import accuracy, auc, gauc, item_means, macro_f1, mae, rmse, user_auc
from distrec.heads.base import target_heads
from distrec.heads.preference import rating_classes
from distrec.heads.rating import clip_ratings
from distrec.train.evaluation import HeadResults
from distrec.train.outputs import write_stage_heads
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

    def ranks(name: str, split: str) -> tuple[UserRanks, dict[str, float]]:
        cases = eval_cases(d.sequences(), split, ws.cfg.eval.max_users)
        found = rank_sharded(cases, score, pipe.evaluator.ranking(d, lists=True), ws.shard())
        return found, popularity_click_metrics(pipe, split)

    record = pipe.ranked_record("baseline_popularity", [target], ranks)
    log(f"baseline_popularity: test ndcg@10 {record['test']['ndcg@10']:.4f}")
    pipe.results["baseline_popularity"] = record


def popularity_click_metrics(pipe: Pipeline, split: str) -> HeadResults:
    """When the target trains a CTR head: AUC and GAUC of training popularity as the click
    score, on the same held-out items and fixed negatives as every model."""
    cfg = pipe.ws.cfg
    if "ctr" not in target_heads(cfg):
        return HeadResults()
    d = pipe.ws.domains[cfg.data.target]
    held = pipe.evaluator.held_out(d, split)
    counts = d.train_counts[held.items]
    return HeadResults(
        {"auc": auc(counts), "gauc": gauc(counts)},
        {"user": case_users(held.cases), "ctr_auc": user_auc(counts)},
    )


def case_users(cases) -> torch.Tensor:
    """[U] the cases' user indices."""
    return torch.tensor([c.user for c in cases], dtype=torch.long)


@register_stage("baseline_rating_means", enabled=baseline("rating_means"), order=43)
def rating_means(pipe: Pipeline) -> None:
    """The rating references: every held-out rating predicted by the global mean training
    rating (`baseline_global_mean`) and by the item's mean training rating
    (`baseline_item_mean`, the global mean for an item never rated in training); their
    preference accuracy/macro-F1 from the rounded prediction."""
    cfg = pipe.ws.cfg
    d = pipe.ws.domains[cfg.data.target]
    found = d.training_ratings()
    if found is None:
        raise ConfigError(
            f"stages.baselines has rating_means but domain {d.name!r} has no ratings; map "
            "`columns.rating` when preparing it or drop rating_means"
        )
    items, ratings = found
    global_mean = ratings.mean().float()
    per_item = item_means(items, ratings.float(), d.num_items)
    predictors = {
        "baseline_global_mean": lambda targets: global_mean.expand(len(targets)),
        "baseline_item_mean": lambda targets: per_item[targets],
    }
    for stage, predict in predictors.items():
        record: dict = {"domains": [cfg.data.target], "ranked": False}
        per_user = {}
        for split in ("valid", "test"):
            held = pipe.evaluator.held_out(d, split)
            targets = torch.tensor([c.target for c in held.cases], dtype=torch.long)
            true = torch.tensor([c.rating for c in held.cases], dtype=torch.float32)
            predicted = clip_ratings(predict(targets), cfg.model)
            record[split] = rating_reference_metrics(predicted, true, cfg.model)
            per_user[cfg.data.target, split] = {
                "user": case_users(held.cases),
                "rating": true.double(),
                "rating_pred": predicted,
            }
        log(f"{stage}: test rmse {record['test']['rmse']:.4f}  mae {record['test']['mae']:.4f}")
        if pipe.ws.is_main:
            write_stage_heads(pipe.ws.out, stage, per_user)
        pipe.results[stage] = record


def rating_reference_metrics(predicted: torch.Tensor, true: torch.Tensor, model) -> dict:
    """RMSE/MAE of a reference prediction (already clipped), and accuracy/macro-F1 of its
    rounded class; `users` as every record has it."""
    classes, truth = rating_classes(predicted, model), rating_classes(true, model)
    return {
        "users": float(len(true)),
        "rmse": rmse(predicted, true.double()),
        "mae": mae(predicted, true.double()),
        "accuracy": accuracy(classes, truth),
        "macro_f1": macro_f1(classes, truth),
    }


@register_stage("baseline_id_target_only", enabled=baseline("id_target_only"), order=41)
def id_target_only(pipe: Pipeline) -> None:
    """The ID-only model with its own tuned lr, dropout, score and temperature."""
    cfg, target = pipe.ws.cfg, pipe.ws.cfg.data.target
    st = cfg.stages
    plan = StagePlan(
        "baseline_id_target_only",
        {target: 1.0},
        [target],
        st.id_baseline_epochs,
        st.id_baseline_lr,
        heads=target_heads(cfg),
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
        heads=target_heads(cfg),
    )
    model, fitted = fit_towers(pipe, new_model(pipe.ws), plan)
    pipe.results[plan.name] = pipe.record(model, plan, fitted)
