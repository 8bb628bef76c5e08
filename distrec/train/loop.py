"""The training recipe: build the loader, fit with early stopping, evaluate.

It calls accelerator.prepare/backward/autocast and never asks which backend
runs underneath (DDP, DeepSpeed, FSDP are chosen by the launch template).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field

import torch
from transformers import get_cosine_schedule_with_warmup

from distrec.data.loader import MixtureLoader, StreamLoader
from distrec.data.stream import StreamSpec
from distrec.data.tokens import AttachTokens
from distrec.distributed.accelerator import barrier, gather_tensors
from distrec.eval.evaluate import eval_cases, evaluate_sharded
from distrec.train.context import DomainData, Run
from distrec.train.losses import ctr_loss, rating_loss, retrieval_loss
from distrec.utils.progress import log, progress


@dataclass
class StagePlan:
    name: str
    train_domains: dict[str, float]
    eval_domains: list[str]
    epochs: int
    lr: float
    train_fraction: float = 1.0
    uses_text: bool = True


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid: float = -1.0
    wall_s: float = 0.0
    data_wait_fraction: float = 0.0
    data_wait_s: float = 0.0
    train_s: float = 0.0
    steps: int = 0


def build_loader(run: Run, plan: StagePlan) -> MixtureLoader:
    cfg = run.cfg
    rank, world = run.rank_world
    loaders = {}
    for name in plan.train_domains:
        d = run.domains[name]
        spec = StreamSpec(batch_size=cfg.train.batch_size, max_history=cfg.data.max_history,
                          seed=cfg.seed, num_workers=cfg.data.num_workers,
                          shuffle_shards=cfg.data.shuffle_shards, resampled=cfg.data.resampled,
                          corrupt=cfg.data.corrupt_shards, train_fraction=plan.train_fraction)
        transform = None
        if cfg.model.mode == "end_to_end" and plan.uses_text:
            transform = AttachTokens(d.tokens, run.tokenizer.pad_token_id)
        loaders[name] = StreamLoader(d.manifest, spec, rank, world, transform, cfg.data.epoch_batches)
    return MixtureLoader(loaders, plan.train_domains, seed=cfg.seed)


def model_inputs(run: Run, batch: dict, d: DomainData, uses_text: bool) -> dict:
    dev = run.device
    if "items" in batch:  # end-to-end: the batch's unique items, tokenized in the worker
        return {"inputs": batch["inputs_local"].to(dev), "targets": batch["targets_local"].to(dev),
                "valid": batch["valid"].to(dev), "items": batch["items"].to(dev),
                "input_ids": batch["input_ids"].to(dev), "attention_mask": batch["attention_mask"].to(dev),
                "popularity": d.popularity[batch["items"]].to(dev)}
    return {"inputs": batch["inputs"].to(dev), "targets": batch["targets"].to(dev),
            "valid": batch["valid"].to(dev), "items": torch.arange(1, d.num_items + 1, device=dev),
            "features": d.features[1:].to(dev) if uses_text else None,
            "popularity": d.popularity[1:].to(dev)}


def compute_loss(run: Run, out: dict, batch: dict, d: DomainData, gen: torch.Generator) -> torch.Tensor:
    cfg = run.cfg.model
    if cfg.head == "ctr":
        return ctr_loss(out, cfg.temperature, gen)
    if cfg.head == "rating":
        real = (batch["targets"] > 0) & batch["valid"][:, None]
        return rating_loss(out, batch["target_ratings"][real].to(run.device))
    sampled = "items" in batch
    log_q = d.log_q[batch["items"]].to(run.device) if (sampled and cfg.logq_correction) else None
    return retrieval_loss(out, cfg.temperature, log_q,
                          cross_rank=sampled and run.cfg.distributed.cross_rank_negatives)


def planned_steps(run: Run, plan: StagePlan) -> int:
    """Optimizer steps `fit` will take at most (AdaLoRA's budget schedule needs it up front)."""
    per_epoch = math.ceil(len(build_loader(run, plan)) / run.cfg.train.grad_accum)
    total = max(1, per_epoch * plan.epochs)
    cap = run.cfg.train.max_steps_per_stage
    return min(total, cap) if cap else total


def fit(run: Run, model: torch.nn.Module, plan: StagePlan, on_step=None) -> tuple[torch.nn.Module, FitResult]:
    """Train `model` for the plan's epochs with early stopping on valid NDCG@10; the
    returned model holds the best epoch's weights."""
    cfg, acc = run.cfg, run.accelerator
    loader = build_loader(run, plan)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=cfg.train.weight_decay)
    total = planned_steps(run, plan)
    # Stepped by hand once per optimizer step: a prepared scheduler would step
    # world_size times, assuming a loader that accelerate itself sharded.
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * total), total)
    model, optimizer = acc.prepare(model, optimizer)
    result, best_dir = FitResult(), run.out / "checkpoints" / plan.name / "best"
    start, bad_epochs = time.perf_counter(), 0
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(plan.epochs):
        loss, wait_s, train_s, steps = train_epoch(run, model, optimizer, scheduler, loader, plan, gen,
                                                   on_step, result.steps, total)
        wait = wait_s / max(train_s, 1e-9)
        result.steps += steps
        result.data_wait_s += wait_s
        result.train_s += train_s
        valid = evaluate(run, model, plan.eval_domains, "valid", plan.uses_text)
        score = valid["ndcg@10"]
        result.history.append({"epoch": epoch + 1, "loss": loss, "valid_ndcg@10": score,
                               "valid": valid, "data_wait_fraction": wait})
        acc.log({f"{plan.name}/loss": loss, f"{plan.name}/valid_ndcg@10": score}, step=epoch + 1)
        log(f"{plan.name} epoch {epoch + 1}/{plan.epochs}: loss {loss:.4f}  valid ndcg@10 {score:.4f}  "
            f"data wait {wait:.1%}  ({time.perf_counter() - start:.0f}s)")
        if score > result.best_valid:
            result.best_valid, result.best_epoch, bad_epochs = score, epoch + 1, 0
            acc.save_state(str(best_dir))
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.train.early_stopping_patience:
                log(f"{plan.name}: early stop after epoch {epoch + 1} (best {result.best_epoch})")
                break
        if result.steps >= total:
            break
    if result.best_epoch >= 0:
        acc.load_state(str(best_dir))
    barrier()
    if run.is_main:
        shutil.rmtree(best_dir, ignore_errors=True)
    result.wall_s = time.perf_counter() - start
    result.data_wait_fraction = result.data_wait_s / max(result.train_s, 1e-9)
    model = acc.unwrap_model(model)
    acc.free_memory()
    return model, result


def train_epoch(run, model, optimizer, scheduler, loader, plan, gen, on_step, step0: int,
                total: int) -> tuple[float, float, float, int]:
    """One pass over the loader: (mean loss, seconds waiting for data, seconds in total, steps)."""
    acc, cfg = run.accelerator, run.cfg
    model.train()
    total_loss, batches, steps, wait = 0.0, 0, 0, 0.0
    epoch_start = time.perf_counter()
    it = iter(loader)
    for _ in progress(range(len(loader)), f"{plan.name}: train"):
        t0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t0
        d = run.domains[batch["domain"]]
        with acc.accumulate(model), acc.autocast():
            out = model(task="train", domain=d.name, **model_inputs(run, batch, d, plan.uses_text))
            loss = compute_loss(run, out, batch, d, gen)
            acc.backward(loss)
            if acc.sync_gradients and cfg.train.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            if acc.sync_gradients:
                steps += 1
                scheduler.step()
                if on_step is not None:  # before zero_grad: AdaLoRA reads the gradients
                    on_step(model, step0 + steps)
            optimizer.zero_grad()
        total_loss += loss.item()
        batches += 1
        if step0 + steps >= total:
            break
    del it
    elapsed = time.perf_counter() - epoch_start
    return total_loss / max(1, batches), wait, elapsed, steps


@dataclass
class CatalogVectors:
    """Item vectors [N+1, d] (row 0 = padding) and each item's learned popularity bias [N+1]."""

    vectors: torch.Tensor
    bias: torch.Tensor

    def scores(self, users: torch.Tensor, temperature: float) -> torch.Tensor:
        return users.float() @ self.vectors.float().T / temperature + self.bias.float()


@torch.no_grad()
def catalog_table(run: Run, model, d: DomainData, uses_text: bool) -> CatalogVectors:
    """The whole catalog encoded in chunks sharded over ranks, gathered on every rank."""
    dev, cfg = run.device, run.cfg
    rank, world = run.rank_world
    e2e = d.tokens is not None and uses_text
    if not e2e:  # cheap (a projection of cached features): every rank does it all
        rank, world = 0, 1
    mine = list(range(1 + rank, d.num_items + 1, world))
    bs = cfg.eval.batch_size if e2e else max(1, len(mine))
    chunks = math.ceil(math.ceil(d.num_items / world) / bs)
    outs = []
    for c in range(chunks):  # equal forward counts on every rank (ZeRO-3/FSDP)
        idx = torch.tensor(mine[c * bs : (c + 1) * bs] or [1])
        kw = {"features": d.features[idx].to(dev)} if (uses_text and not e2e) else {}
        if e2e:
            width = max(1, int(d.tokens.lengths[idx].max()))
            mask = (torch.arange(width)[None, :] < d.tokens.lengths[idx, None]).long()
            ids = d.tokens.input_ids[idx, :width].long().masked_fill(mask == 0, run.tokenizer.pad_token_id)
            kw = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
        out = model(task="catalog", domain=d.name, items=idx.to(dev), popularity=d.popularity[idx].to(dev), **kw)
        packed = torch.cat([out["items"].float(), out["bias"].float()[:, None]], 1).cpu()
        outs.append(packed[: len(mine[c * bs : (c + 1) * bs])])
    local = torch.cat(outs)
    parts = gather_tensors(local) if e2e else [local]
    table = torch.zeros(d.num_items + 1, local.shape[1])
    for r, part in enumerate(parts):
        table[1 + r :: world][: part.shape[0]] = part
    table = table.to(dev)
    return CatalogVectors(table[:, :-1], table[:, -1])


@torch.no_grad()
def evaluate(run: Run, model, domains: list[str], split: str, uses_text: bool = True) -> dict[str, float]:
    """Mean over `domains` of full-ranking metrics; one domain gives its metrics unchanged."""
    per = [evaluate_domain(run, model, run.domains[n], split, uses_text) for n in domains]
    keys = per[0].keys()
    return {k: sum(p[k] for p in per) / len(per) for k in keys}


@torch.no_grad()
def evaluate_domain(run: Run, model, d: DomainData, split: str, uses_text: bool = True) -> dict[str, float]:
    cfg, acc = run.cfg, run.accelerator
    was_training = model.training
    model.eval()
    with acc.autocast():
        catalog = catalog_table(run, model, d, uses_text)

        def score(history: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
            users = model(task="users", domain=d.name, history=history.to(run.device),
                          last=last.to(run.device), table=catalog.vectors)["users"]
            return catalog.scores(users, cfg.model.temperature)

        rank, world = run.rank_world
        cases = eval_cases(d.sequences(), split, cfg.eval.max_users)
        metrics = evaluate_sharded(cases, d.num_items, score, cfg.eval.ks, cfg.data.max_history,
                                   rank, world, gather_tensors, cfg.eval.batch_size)
    model.train(was_training)
    return metrics
