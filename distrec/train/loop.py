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
from distrec.distributed.accelerator import (
    barrier,
    gather_tensors,
    live_strategy,
    mean_over_ranks,
)
from distrec.distributed.unshard import PlainCopy
from distrec.eval.evaluate import UserRanks, eval_cases, rank_sharded
from distrec.eval.metrics import metrics_from_ranks
from distrec.train.checkpoint import Preempted, StageCheckpoints, preemption_requested
from distrec.train.context import DomainData, Run
from distrec.train.losses import (
    ctr_loss,
    inclusion_log_prob,
    item_slots,
    rating_loss,
    retrieval_loss,
)
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
    train_targets_per_epoch: int = 0


def build_loader(run: Run, plan: StagePlan) -> MixtureLoader:
    cfg = run.cfg
    rank, world = run.rank_world
    loaders = {}
    for name in plan.train_domains:
        d = run.domains[name]
        spec = StreamSpec(
            batch_size=cfg.train.batch_size,
            max_history=cfg.data.max_history,
            seed=cfg.seed,
            num_workers=cfg.data.num_workers,
            shuffle_shards=cfg.data.shuffle_shards,
            resampled=cfg.data.resampled,
            corrupt=cfg.data.corrupt_shards,
            train_fraction=plan.train_fraction,
            shard_url=cfg.data.shard_url,
            train_window=cfg.data.train_window,
        )
        transform = None
        if cfg.model.mode == "end_to_end" and plan.uses_text:
            transform = AttachTokens(d.tokens, run.tokenizer.pad_token_id)
        loaders[name] = StreamLoader(
            d.manifest, spec, rank, world, transform, cfg.data.epoch_batches
        )
    return MixtureLoader(loaders, plan.train_domains, seed=cfg.seed)


def model_inputs(run: Run, batch: dict, d: DomainData, uses_text: bool) -> dict:
    dev = run.device
    if "items" in batch:  # end-to-end: the batch's unique items, tokenized in the worker
        return {
            "inputs": batch["inputs_local"].to(dev),
            "targets": batch["targets_local"].to(dev),
            "valid": batch["valid"].to(dev),
            "items": batch["items"].to(dev),
            "input_ids": batch["input_ids"].to(dev),
            "attention_mask": batch["attention_mask"].to(dev),
            "popularity": d.popularity[batch["items"]].to(dev),
        }
    return {
        "inputs": batch["inputs"].to(dev),
        "targets": batch["targets"].to(dev),
        "valid": batch["valid"].to(dev),
        "items": torch.arange(1, d.num_items + 1, device=dev),
        "features": d.features[1:].to(dev) if uses_text else None,
        "popularity": d.popularity[1:].to(dev),
    }


def compute_loss(
    run: Run, out: dict, batch: dict, d: DomainData, gen: torch.Generator
) -> torch.Tensor:
    cfg = run.cfg.model
    if cfg.head == "ctr":
        return ctr_loss(out, gen)
    if cfg.head == "rating":
        real = (batch["targets"] > 0) & batch["valid"][:, None]
        return rating_loss(out, batch["target_ratings"][real].to(run.device))
    sampled = "items" in batch
    cross_rank = sampled and run.cfg.distributed.cross_rank_negatives
    log_q = None
    if sampled and cfg.logq_correction:
        # Every rank's batch is drawn alike, so gathered candidates come from world x slots.
        world = run.rank_world[1] if cross_rank else 1
        slots = item_slots(batch["inputs"], batch["targets"]) * world
        log_q = inclusion_log_prob(d.share[batch["items"]], slots).to(run.device)
    return retrieval_loss(out, log_q, cross_rank=cross_rank)


def planned_steps(run: Run, plan: StagePlan) -> int:
    """Optimizer steps `fit` will take at most (AdaLoRA's budget schedule needs it up front):
    `train.max_steps` when set (a step budget instead of epochs), else the plan's epochs."""
    if run.cfg.train.max_steps:
        return run.cfg.train.max_steps
    per_epoch = math.ceil(len(build_loader(run, plan)) / run.cfg.train.grad_accum)
    return max(1, per_epoch * plan.epochs)


def epochs_left(run: Run, plan: StagePlan, state: EpochState, total: int) -> bool:
    """Whether another epoch runs: the step budget (train.max_steps) or the plan's epochs."""
    if run.cfg.train.max_steps:
        return state.result.steps < total
    return state.epoch < plan.epochs


def fit(
    run: Run, model: torch.nn.Module, plan: StagePlan, on_step=None
) -> tuple[torch.nn.Module, FitResult]:
    """Train `model` for the plan's epochs with early stopping on valid NDCG@10; the
    returned model holds the best epoch's weights. Resumes from the stage's newest
    checkpoint when the run is resumed; a SIGTERM ends it with a final checkpoint."""
    cfg, acc = run.cfg, run.accelerator
    loader = build_loader(run, plan)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=cfg.train.weight_decay)
    total = planned_steps(run, plan)
    # Stepped by hand once per optimizer step: a prepared scheduler would step
    # world_size times, assuming a loader that accelerate itself sharded.
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(cfg.train.warmup_ratio * total), total
    )
    plain = PlainCopy(live_strategy(acc), model)
    model, optimizer = acc.prepare(model, optimizer)
    ckpt = StageCheckpoints(run.out, plan.name, cfg.output.keep_last)
    best_dir = run.out / "checkpoints" / plan.name / "best"
    state = EpochState(gen=torch.Generator().manual_seed(cfg.seed), scheduler=scheduler)
    latest = ckpt.latest() if run.resume else None
    if latest is not None:
        state.restore(*ckpt.restore(acc, latest), loader)
        log(
            f"{plan.name}: resumed from {latest.name} (epoch {state.epoch + 1}, "
            f"{state.epoch_batches} batches into it)"
        )
    start = time.perf_counter() - state.result.wall_s
    state.result.train_targets_per_epoch = loader.targets_per_epoch()
    budget = f"{total} optimizer steps" if cfg.train.max_steps else f"{plan.epochs} epochs"
    log(
        f"{plan.name}: {state.result.train_targets_per_epoch} training targets per epoch "
        f"(data.train_window={cfg.data.train_window}), budget {budget}"
    )

    def checkpoint() -> None:
        ckpt.save(
            acc, f"step-{state.global_batches:08d}", state.to_json(start), loader.state_dict()
        )

    while epochs_left(run, plan, state, total):
        if train_epoch(
            run, model, optimizer, scheduler, loader, plan, state, on_step, total, checkpoint
        ):
            checkpoint()
            raise Preempted(
                f"{plan.name}: stopped by SIGTERM after {state.global_batches} batches; "
                f"checkpoint saved, continue with --resume auto"
            )
        loader.prefetch()  # next epoch's workers read while we evaluate
        valid = evaluate(run, model, plan.eval_domains, "valid", plan.uses_text)
        stop = state.end_epoch(valid, EarlyStopping.of(cfg), total)
        h = state.result.history[-1]
        h["elapsed_s"] = time.perf_counter() - start  # wall time to this point (time to quality)
        metric = cfg.eval.metric
        acc.log(
            {f"{plan.name}/loss": h["loss"], f"{plan.name}/valid_{metric}": valid[metric]},
            step=state.epoch,
        )
        log(
            f"{plan.name} epoch {state.epoch} ({state.result.steps}/{total} steps): loss "
            f"{h['loss']:.4f}  valid {metric} {valid[metric]:.4f}  data wait "
            f"{h['data_wait_fraction']:.1%}  ({time.perf_counter() - start:.0f}s)"
        )
        if state.result.best_epoch == state.epoch:
            acc.save_state(str(best_dir))
        checkpoint()
        if run.on_epoch is not None:  # after the save: a sweep hands this checkpoint on
            run.on_epoch(plan.name, h, stop or not epochs_left(run, plan, state, total))
        if stop:
            break
    loader.close()
    if state.result.best_epoch >= 0:
        acc.load_state(str(best_dir))
    barrier()
    if run.is_main:
        shutil.rmtree(best_dir, ignore_errors=True)
    result = state.result
    result.wall_s = time.perf_counter() - start
    result.data_wait_fraction = result.data_wait_s / max(result.train_s, 1e-9)
    model = plain.trained(acc, model)
    acc.free_memory()
    return model, result


@dataclass(frozen=True)
class EarlyStopping:
    """Stop after `patience` evaluations whose `metric` did not beat the best by > min_delta."""

    metric: str
    patience: int
    min_delta: float

    @classmethod
    def of(cls, cfg) -> EarlyStopping:
        t = cfg.train
        return cls(cfg.eval.metric, t.early_stopping_patience, t.early_stopping_min_delta)


@dataclass
class EpochState:
    """A stage's progress that a checkpoint carries besides tensors (those go through
    accelerator.save_state: model, optimizer, RNG states)."""

    gen: torch.Generator
    scheduler: object = None
    result: FitResult = field(default_factory=FitResult)
    epoch: int = 0  # completed epochs
    epoch_batches: int = 0  # batches done in the current epoch
    epoch_loss: float = 0.0
    epoch_wait_s: float = 0.0
    epoch_train_s: float = 0.0
    global_batches: int = 0
    bad_epochs: int = 0

    COUNTERS = (
        "epoch",
        "epoch_batches",
        "epoch_loss",
        "epoch_wait_s",
        "epoch_train_s",
        "global_batches",
        "bad_epochs",
    )

    def end_epoch(self, valid: dict, rule: EarlyStopping, total_steps: int) -> bool:
        """Record the finished epoch; True when training should stop (patience or step budget)."""
        r, score = self.result, valid[rule.metric]
        self.epoch += 1
        r.data_wait_s += self.epoch_wait_s
        r.train_s += self.epoch_train_s
        r.history.append(
            {
                "epoch": self.epoch,
                "loss": self.epoch_loss / max(1, self.epoch_batches),
                "valid_ndcg@10": valid["ndcg@10"],
                "valid_metric": score,
                "steps": r.steps,
                "valid": valid,
                "data_wait_fraction": self.epoch_wait_s / max(self.epoch_train_s, 1e-9),
            }
        )
        self.epoch_batches, self.epoch_loss, self.epoch_wait_s, self.epoch_train_s = (
            0,
            0.0,
            0.0,
            0.0,
        )
        if score > r.best_valid + rule.min_delta or r.best_epoch < 0:
            r.best_valid, r.best_epoch, self.bad_epochs = score, self.epoch, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= rule.patience:
                log(f"early stop after epoch {self.epoch} (best {r.best_epoch})")
                return True
        return r.steps >= total_steps

    def to_json(self, start: float) -> dict:
        r = self.result
        return {
            **{k: getattr(self, k) for k in self.COUNTERS},
            "gen": self.gen.get_state().tolist(),
            "scheduler": self.scheduler.state_dict(),
            "result": {
                "history": r.history,
                "best_epoch": r.best_epoch,
                "best_valid": r.best_valid,
                "steps": r.steps,
                "data_wait_s": r.data_wait_s,
                "train_s": r.train_s,
                "wall_s": time.perf_counter() - start,
                "train_targets_per_epoch": r.train_targets_per_epoch,
            },
        }

    def restore(self, saved: dict, data: dict, loader) -> None:
        for key in self.COUNTERS:
            setattr(self, key, saved[key])
        self.gen.set_state(torch.tensor(saved["gen"], dtype=torch.uint8))
        self.scheduler.load_state_dict(saved["scheduler"])
        self.result = FitResult(**saved["result"])
        loader.load_state_dict(data)


def train_epoch(
    run, model, optimizer, scheduler, loader, plan, state: EpochState, on_step, total, checkpoint
) -> bool:
    """The rest of the current epoch (all of it unless resumed mid-epoch), accumulated into
    `state`, with a `checkpoint()` every `train.checkpoint_every_steps` optimizer steps.
    Returns True when a preemption was requested (checked after whole steps)."""
    acc, cfg = run.accelerator, run.cfg
    every = cfg.train.checkpoint_every_steps
    model.train()
    epoch_start = time.perf_counter()
    it = iter(loader)
    preempted = False
    for _ in progress(range(loader.batches_left()), f"{plan.name}: train"):
        t0 = time.perf_counter()
        batch = next(it)
        state.epoch_wait_s += time.perf_counter() - t0
        d = run.domains[batch["domain"]]
        with acc.accumulate(model), acc.autocast():
            out = model(task="train", domain=d.name, **model_inputs(run, batch, d, plan.uses_text))
            loss = compute_loss(run, out, batch, d, state.gen)
            acc.backward(loss)
            if acc.sync_gradients and cfg.train.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
            optimizer.step()
            if acc.sync_gradients:
                state.result.steps += 1
                scheduler.step()
                if on_step is not None:  # before zero_grad: AdaLoRA reads the gradients
                    on_step(model, state.result.steps)
            optimizer.zero_grad()
        stepped = acc.sync_gradients
        # Averaged over ranks so the curve means the global batch (and is the same on every
        # rank, which is what rank 0's checkpoint records for all of them).
        state.epoch_loss += mean_over_ranks(loss).item()
        state.epoch_batches += 1
        state.global_batches += 1
        preempted = preemption_requested()
        if preempted or state.result.steps >= total:
            break
        if every and stepped and state.result.steps % every == 0:
            checkpoint()
    state.epoch_train_s += time.perf_counter() - epoch_start
    del it
    return preempted


@dataclass
class CatalogVectors:
    """Item vectors [N+1, d] (row 0 = padding), each item's learned popularity bias [N+1]
    and the model's score scale (1/temperature)."""

    vectors: torch.Tensor
    bias: torch.Tensor
    scale: float

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """[B, N+1] scores in fp32, even inside an autocast region: bf16 scores would round
        near-equal items into ties and change ranks."""
        with torch.autocast(device_type=users.device.type, enabled=False):
            return users.float() @ self.vectors.float().T * self.scale + self.bias.float()


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
            ids = (
                d.tokens.input_ids[idx, :width]
                .long()
                .masked_fill(mask == 0, run.tokenizer.pad_token_id)
            )
            kw = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
        out = model(
            task="catalog",
            domain=d.name,
            items=idx.to(dev),
            popularity=d.popularity[idx].to(dev),
            **kw,
        )
        packed = torch.cat([out["items"].float(), out["bias"].float()[:, None]], 1).cpu()
        outs.append(packed[: len(mine[c * bs : (c + 1) * bs])])
    local = torch.cat(outs)
    parts = gather_tensors(local) if e2e else [local]
    table = torch.zeros(d.num_items + 1, local.shape[1])
    for r, part in enumerate(parts):
        table[1 + r :: world][: part.shape[0]] = part
    table = table.to(dev)
    return CatalogVectors(table[:, :-1], table[:, -1], float(out["scale"].float().reshape(-1)[0]))


def mean_metrics(per_domain: list[dict[str, float]]) -> dict[str, float]:
    """Mean over domains of their metrics; one domain gives its metrics unchanged."""
    keys = per_domain[0].keys()
    return {k: sum(p[k] for p in per_domain) / len(per_domain) for k in keys}


@torch.no_grad()
def evaluate(
    run: Run, model, domains: list[str], split: str, uses_text: bool = True
) -> dict[str, float]:
    """Mean over `domains` of full-ranking metrics; one domain gives its metrics unchanged."""
    return mean_metrics(
        [evaluate_domain(run, model, run.domains[n], split, uses_text) for n in domains]
    )


@torch.no_grad()
def evaluate_domain(
    run: Run, model, d: DomainData, split: str, uses_text: bool = True
) -> dict[str, float]:
    return metrics_from_ranks(domain_ranks(run, model, d, split, uses_text).ranks, run.cfg.eval.ks)


@torch.no_grad()
def domain_ranks(run: Run, model, d: DomainData, split: str, uses_text: bool = True) -> UserRanks:
    """Every evaluated user's target rank in `split` (sharded over ranks, gathered)."""
    cfg, acc = run.cfg, run.accelerator
    was_training = model.training
    model.eval()
    # Towers under autocast (fast); the scores themselves in fp32 (CatalogVectors.scores).
    with acc.autocast():
        catalog = catalog_table(run, model, d, uses_text)

        def score(history: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
            users = model(
                task="users",
                domain=d.name,
                history=history.to(run.device),
                last=last.to(run.device),
                table=catalog.vectors,
            )["users"]
            return catalog.scores(users)

        rank, world = run.rank_world
        cases = eval_cases(d.sequences(), split, cfg.eval.max_users)
        found = rank_sharded(
            cases,
            d.num_items,
            score,
            cfg.data.max_history,
            rank,
            world,
            gather_tensors,
            cfg.eval.batch_size,
        )
    model.train(was_training)
    return found
