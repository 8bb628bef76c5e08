"""The stages of a run: pretrain -> zero_shot -> adapt, and baselines on the same split."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_model

from distrec.distributed.accelerator import barrier, gather_tensors, live_strategy
from distrec.distributed.unshard import SHARDING
from distrec.eval.evaluate import UserRanks, eval_cases, rank_sharded
from distrec.eval.metrics import metrics_from_ranks
from distrec.models.recommender import Recommender
from distrec.train.adapters import (
    AdaLoraBudget,
    add_domain_adapter,
    add_lm_lora,
    export_adapter,
    save_weights,
)
from distrec.train.context import Run, write_json
from distrec.train.loop import FitResult, StagePlan, domain_ranks, fit, mean_metrics, planned_steps
from distrec.train.outputs import write_stage_ranks
from distrec.utils.progress import log


def new_model(run: Run, use_text: bool = True, dropout: float | None = None) -> Recommender:
    """A fresh recommender; the ID-only one takes the ID baseline's score and temperature."""
    cfg = run.cfg
    set_seed(cfg.seed)
    model_cfg = cfg.model
    if not use_text:
        st = cfg.stages
        model_cfg = model_cfg.model_copy(
            update={
                "score": st.id_baseline_score or model_cfg.score,
                "temperature": st.id_baseline_temperature or model_cfg.temperature,
            }
        )
    lm = run.lm if (use_text and cfg.model.mode == "end_to_end") else None
    if lm is not None:
        for p in lm.parameters():
            p.requires_grad_(False)
    items = {n: d.num_items for n, d in run.domains.items()}
    return Recommender(
        model_cfg,
        run.feature_dim if use_text else 1,
        items,
        cfg.data.max_history,
        lm=lm,
        use_text=use_text,
        use_ids=None if use_text else True,
        dropout=dropout,
    )


def stage_record(run: Run, model, plan: StagePlan, fit_result: FitResult | None) -> dict:
    """Valid and test metrics of the stage's model (mean over its domains); every user's
    rank goes to ranks/<stage>.parquet so runs and stages compare user by user."""

    def ranks(name: str, split: str) -> UserRanks:
        return domain_ranks(run, model, run.domains[name], split, plan.uses_text)

    record = ranked_record(run, plan.name, plan.eval_domains, ranks)
    if fit_result is not None:
        record.update(asdict(fit_result))
    log(
        f"{plan.name}: test ndcg@10 {record['test']['ndcg@10']:.4f}  valid {record['valid']['ndcg@10']:.4f}"
    )
    return record


def _train_text(run: Run, plan: StagePlan) -> tuple[object, FitResult]:
    """A fresh text model trained on `plan` (see `fit_towers`)."""
    return fit_towers(run, new_model(run), plan)


def fit_towers(run: Run, model, plan: StagePlan) -> tuple[object, FitResult]:
    """Train every trainable tower parameter; in end-to-end mode the frozen LM gets a LoRA
    that is merged into the weights afterwards (the next stage starts from it)."""
    cfg = run.cfg
    e2e = cfg.model.mode == "end_to_end" and cfg.peft.method != "none"
    if e2e:
        model = add_lm_lora(model, cfg, plan.name.replace("_", "-"))
    model, result = fit(run, model, plan)
    if e2e:
        model = model.merge_and_unload()
    return model, result


def run_stages(run: Run) -> dict[str, dict]:
    """Run every enabled stage in order; on resume, finished stages are read back from
    `stages.json` (and the pretrained base from its export) instead of being re-run."""
    cfg, st = run.cfg, run.cfg.stages
    results = StageResults(run)
    target = cfg.data.target
    base = None
    if st.pretrain.enabled and "pretrain" in results:
        base = load_base(run)
    elif st.pretrain.enabled:
        plan = StagePlan(
            "pretrain",
            {s: cfg.data.mixture.get(s, 1.0) for s in cfg.data.sources},
            cfg.data.sources,
            st.pretrain.epochs,
            st.pretrain.lr or cfg.train.lr,
        )
        base, fitted = _train_text(run, plan)
        if run.is_main:
            save_weights(base, base_weights(run.out))
        results["pretrain"] = stage_record(run, base, plan, fitted)
    if target is None:
        return results.stages
    target_plan = StagePlan("zero_shot", {}, [target], 0, cfg.train.lr)
    if st.zero_shot and base is not None and "zero_shot" not in results:
        results["zero_shot"] = stage_record(run, base, target_plan, None)
    if st.adapt.enabled and base is not None and "adapt" not in results:
        adapt_stages(run, base, target, results)
    if "popularity" in st.baselines and "baseline_popularity" not in results:
        results["baseline_popularity"] = popularity(run, target)
    if "id_target_only" in st.baselines and "baseline_id_target_only" not in results:
        plan = StagePlan(
            "baseline_id_target_only",
            {target: 1.0},
            [target],
            st.id_baseline_epochs,
            st.id_baseline_lr,
            uses_text=False,
        )
        model, fitted = fit(
            run, new_model(run, use_text=False, dropout=st.id_baseline_dropout), plan
        )
        results[plan.name] = stage_record(run, model, plan, fitted)
    if "text_target_only" in st.baselines and "baseline_text_target_only" not in results:
        plan = StagePlan(
            "baseline_text_target_only",
            {target: 1.0},
            [target],
            st.text_baseline_epochs,
            st.pretrain.lr or cfg.train.lr,
        )
        model, fitted = _train_text(run, plan)
        results[plan.name] = stage_record(run, model, plan, fitted)
    return results.stages


class StageResults:
    """Finished stages' records, persisted after each stage (rank 0) so a resumed run skips them."""

    def __init__(self, run: Run) -> None:
        self.run, self.path = run, run.out / "stages.json"
        self.stages: dict[str, dict] = {}
        if run.resume and self.path.exists():
            self.stages = json.loads(self.path.read_text())
            log(f"resuming: finished stages {list(self.stages)} are kept")

    def __contains__(self, stage: str) -> bool:
        return stage in self.stages

    def __setitem__(self, stage: str, record: dict) -> None:
        self.stages[stage] = record
        if self.run.is_main:
            write_json(self.path, self.stages)
        barrier()


def base_weights(out: Path) -> Path:
    """The pretrained base every adapter of a run belongs to."""
    return out / "export" / "base" / "model.safetensors"


def load_base(run: Run):
    model = new_model(run)
    load_model(model, str(base_weights(run.out)))
    return model


def adapt_stages(run: Run, base, target: str, results: StageResults) -> None:
    """stages.adapt.mode: one adapt model (lora or full), or both (`adapt_lora`,
    `adapt_full`, each its own stage record and checkpoints) and `adapt` = the one with the
    better validation eval.metric: chosen on the target's valid split, never on test."""
    mode, metric = run.cfg.stages.adapt.mode, run.cfg.eval.metric
    if mode != "auto":
        results["adapt"] = {**ADAPTERS[mode](run, base, target, "adapt"), "mode": mode}
        return
    for m in ("lora", "full"):
        if f"adapt_{m}" not in results:
            start = copy.deepcopy(base)  # each starts from the same pretrained weights
            results[f"adapt_{m}"] = {**ADAPTERS[m](run, start, target, f"adapt_{m}"), "mode": m}
    best = max(("lora", "full"), key=lambda m: results.stages[f"adapt_{m}"]["valid"][metric])
    chosen = results.stages[f"adapt_{best}"]
    log(f"adapt (auto): {best} wins on valid {metric} ({chosen['valid'][metric]:.4f})")
    results["adapt"] = {**chosen, "mode": best, "selected_by": f"valid {metric}"}
    if run.is_main:
        write_stage_ranks(run.out, "adapt", stage_ranks(run.out, f"adapt_{best}"))
    barrier()


def set_adapt_id_dropout(run: Run, model) -> None:
    """stages.adapt.id_dropout, if set, replaces the pretrained model's ID-row dropout."""
    rate = run.cfg.stages.adapt.id_dropout
    if rate is not None:
        model.item_tower.id_dropout = rate


def adapt_plan(run: Run, target: str, name: str) -> StagePlan:
    st = run.cfg.stages
    return StagePlan(
        name,
        {target: 1.0},
        [target],
        st.adapt.epochs,
        st.adapt.lr or run.cfg.train.lr,
        train_fraction=st.adapt.train_fraction,
    )


def adapt_full(run: Run, base, target: str, name: str) -> dict:
    """Warm-start fine-tuning of every tower parameter (the frozen LM gets a merged LoRA in
    end-to-end mode, as in pretraining); exported as merged safetensors."""
    plan = adapt_plan(run, target, name)
    model = base
    set_adapt_id_dropout(run, model)
    for p in model.parameters():
        p.requires_grad_(True)
    if model.item_tower.lm is not None:
        for p in model.item_tower.lm.parameters():
            p.requires_grad_(False)
    trained, fitted = fit_towers(run, model, plan)
    record = stage_record(run, trained, plan, fitted)
    if run.is_main:
        save_weights(trained, run.out / "export" / f"{target}-full" / "model.safetensors")
    barrier()
    return record


def adapt_lora(run: Run, base, target: str, name: str) -> dict:
    cfg, plan = run.cfg, adapt_plan(run, target, name)
    set_adapt_id_dropout(run, base)
    peft_model = add_domain_adapter(
        base, cfg, target, planned_steps(run, plan), include_lm=cfg.model.mode == "end_to_end"
    )
    on_step = None
    if cfg.peft.method == "adalora":
        sharded = live_strategy(run.accelerator) in SHARDING
        on_step = AdaLoraBudget(peft_model, sharded, cfg.train.max_grad_norm)
    trained, fitted = fit(run, peft_model, plan, on_step=on_step)
    if on_step is not None:
        on_step.remove()
    record = stage_record(run, trained, plan, fitted)
    if run.is_main:
        export_adapter(trained, run.out, target, base_weights(run.out))
        merged = trained.merge_and_unload()
        save_weights(merged, run.out / "export" / target / "model.safetensors")
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


def popularity(run: Run, target: str) -> dict:
    """Training-count popularity, ranked under the same protocol (history masked, half ties)."""
    d = run.domains[target]
    counts = d.train_counts

    def score(history, last):
        return counts.expand(history.shape[0], -1)

    rank, world = run.rank_world

    def ranks(name: str, split: str) -> UserRanks:
        cases = eval_cases(d.sequences(), split, run.cfg.eval.max_users)
        return rank_sharded(
            cases,
            d.num_items,
            score,
            run.cfg.data.max_history,
            rank,
            world,
            gather_tensors,
            run.cfg.eval.batch_size,
        )

    out = ranked_record(run, "baseline_popularity", [target], ranks)
    log(f"baseline_popularity: test ndcg@10 {out['test']['ndcg@10']:.4f}")
    return out


def ranked_record(run: Run, stage: str, domains: list[str], ranks) -> dict:
    """{domains, valid, test} from `ranks(domain, split) -> UserRanks`, ranks saved (rank 0)."""
    record: dict = {"domains": domains}
    found: dict[tuple[str, str], UserRanks] = {}
    for split in ("valid", "test"):
        per_domain = []
        for name in domains:
            found[name, split] = ranks(name, split)
            per_domain.append(metrics_from_ranks(found[name, split].ranks, run.cfg.eval.ks))
        record[split] = mean_metrics(per_domain)
    if run.is_main:
        write_stage_ranks(run.out, stage, found)
    return record
