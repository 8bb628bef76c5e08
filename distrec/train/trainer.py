"""The Trainer: one stage's training recipe, built once with typed state.

setup (loader, optimizer, schedule, `accelerator.prepare`) -> per epoch: train steps,
evaluate on validation, checkpoint, hooks -> back to the best epoch's weights.
It calls accelerator.prepare/backward/autocast and never asks which backend runs
underneath (DDP, DeepSpeed, FSDP are chosen by the launch template).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from distrec.config import RunConfig
from distrec.data.collate import StreamBatch
from distrec.data.loader import MixtureLoader, StreamLoader
from distrec.data.stream import StreamSpec
from distrec.data.tokens import AttachTokens
from distrec.distributed.accelerator import live_strategy
from distrec.distributed.collectives import barrier
from distrec.distributed.unshard import PlainCopy
from distrec.heads import LossContext, NegativeSampling
from distrec.models.io import TrainBatch, TrainOutputs
from distrec.train.batches import is_sampled, train_batch
from distrec.train.checkpoint import Preempted, StageCheckpoints, preemption_requested
from distrec.train.compile import prepare_execution
from distrec.train.evaluation import Evaluator, reads_text
from distrec.train.losses import JointLoss, freeze_other_heads
from distrec.train.precision import FrozenLmStorage
from distrec.train.sampling import NegativeSampler, catalog_sampling, uses_sampled_softmax
from distrec.train.state import EarlyStopping, FitResult, TrainState
from distrec.train.workspace import Workspace
from distrec.utils.progress import log, progress


@dataclass(frozen=True)
class StagePlan:
    """What a stage trains on (`train_domains`: name -> mixture weight), what it is evaluated
    on, for how long (`epochs`, unless `train.max_steps` sets a step budget), how fast, and
    which heads it trains and judges (name -> joint-loss weight; None = model.heads)."""

    name: str
    train_domains: dict[str, float]
    eval_domains: list[str]
    epochs: int
    lr: float
    train_fraction: float = 1.0
    heads: dict[str, float] | None = None

    def head_weights(self, cfg: RunConfig) -> dict[str, float]:
        """The heads this stage trains, with their joint-loss weights."""
        return self.heads if self.heads is not None else cfg.model.heads


def negative_samplers(ws: Workspace, plan: StagePlan) -> dict[str, NegativeSampler]:
    """A sampler for each trained domain whose cached-mode batches use the sampled softmax
    (train.loss); the others score their whole catalog."""
    train = ws.cfg.train
    chosen = {}
    for name in plan.train_domains:
        d = ws.domains[name]
        if uses_sampled_softmax(train, d.num_items):
            chosen[name] = NegativeSampler(catalog_sampling(train, d.share))
    return chosen


class TrainHook:
    """Code run at fixed points of `Trainer.fit`; override what you need (no-op defaults)."""

    def on_step(self, trainer: Trainer, step: int) -> None:
        """After optimizer step `step` (1-based) and its scheduler step, before zero_grad:
        the gradients are still there."""

    def on_epoch_end(self, trainer: Trainer, entry: dict, last: bool) -> None:
        """After the epoch's evaluation and checkpoint; `entry` is its history record,
        `last` whether the stage stops here."""

    def close(self, trainer: Trainer) -> None:
        """When the stage's training has ended (also after early stopping)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a resumed run needs to continue exactly (saved in every checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Back to what `state_dict` returned when the checkpoint was written."""


class LossTerm(TrainHook):
    """A hook that adds a term to the stage's joint loss (e.g. distillation, domain-adversarial
    alignment): it may add inputs to each step's request (inside the wrapped forward, so
    every backend sees one forward) and returns its loss from the outputs."""

    def request(self, trainer: Trainer, request: TrainBatch) -> TrainBatch:
        """The step's model input, with whatever the term needs added (unchanged by default)."""
        return request

    def loss(self, trainer: Trainer, out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
        """The term's (weighted) loss for this step; a batch without a valid window (one that
        keeps ranks in step) must return a zero that still touches the outputs."""
        raise NotImplementedError

    def epoch_metrics(self, trainer: Trainer) -> dict[str, float]:
        """Values to keep in the epoch's history entry, measured after its validation and
        before its checkpoint (so a resumed stage has them too); none by default."""
        return {}


def build_loader(ws: Workspace, plan: StagePlan, with_tokens: bool) -> MixtureLoader:
    """The plan's training stream on this rank (a mixture over its domains); `with_tokens`:
    end to end, the workers tokenize each batch's distinct items."""
    cfg = ws.cfg
    rank, world = ws.rank_world
    loaders = {}
    for name in plan.train_domains:
        d = ws.domains[name]
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
        if cfg.model.mode == "end_to_end" and with_tokens:
            transform = AttachTokens(d.tokens, ws.text.tokenizer.pad_token_id)
        loaders[name] = StreamLoader(
            d.manifest, spec, rank, world, transform, cfg.data.epoch_batches
        )
    return MixtureLoader(loaders, plan.train_domains, seed=cfg.seed)


def step_budget(ws: Workspace, plan: StagePlan, batches_per_epoch: int) -> int:
    """Optimizer steps a stage takes at most: `train.max_steps` when set (a step budget
    instead of epochs), else the plan's epochs."""
    if ws.cfg.train.max_steps:
        return ws.cfg.train.max_steps
    per_epoch = -(-batches_per_epoch // ws.cfg.train.grad_accum)
    return max(1, per_epoch * plan.epochs)


def planned_steps(ws: Workspace, plan: StagePlan) -> int:
    """`step_budget` before a Trainer exists (AdaLoRA's schedule is fixed when the adapter
    is created)."""
    return step_budget(ws, plan, len(build_loader(ws, plan, with_tokens=False)))


class Trainer:
    """Trains one model on one StagePlan with early stopping on `eval.metric`; resumable
    from the stage's newest checkpoint; a SIGTERM ends it with a final checkpoint."""

    def __init__(
        self, ws: Workspace, model: nn.Module, plan: StagePlan, hooks: Sequence[TrainHook] = ()
    ) -> None:
        cfg = ws.cfg
        self.ws, self.plan, self.hooks = ws, plan, list(hooks)
        self.terms = [h for h in self.hooks if isinstance(h, LossTerm)]
        self.accelerator: Accelerator = ws.accelerator
        self.reads_text = reads_text(model)
        self.loss = JointLoss(plan.head_weights(cfg))
        self.samplers = negative_samplers(ws, plan)
        self.loader = build_loader(ws, plan, with_tokens=self.reads_text)
        freeze_other_heads(model, list(self.loss.weights))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=cfg.train.weight_decay)
        self.total_steps = step_budget(ws, plan, len(self.loader))
        # Stepped by hand once per optimizer step: a prepared scheduler would step
        # world_size times, assuming a loader that accelerate itself sharded.
        self.scheduler = get_cosine_schedule_with_warmup(
            optimizer, int(cfg.train.warmup_ratio * self.total_steps), self.total_steps
        )
        strategy = live_strategy(self.accelerator)
        self.storage = FrozenLmStorage.store(
            model, ws.precision, strategy, cfg.train.frozen_lm_storage
        )
        self._plain = PlainCopy(strategy, model)
        # After the plain copy (a deep copy must not share compiled calls), before prepare.
        self.execution = prepare_execution(model, cfg)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.checkpoints = StageCheckpoints(
            ws.out,
            plan.name,
            cfg.output.keep_last,
            batch_size=cfg.train.batch_size,
            grad_accum=cfg.train.grad_accum,
        )
        self.best_dir = ws.out / "checkpoints" / plan.name / "best"
        self.state = TrainState(
            gen=torch.Generator().manual_seed(cfg.seed), scheduler=self.scheduler
        )
        self.stopping = EarlyStopping.of(cfg)
        self.evaluator = Evaluator(ws)
        self.clock_start = time.perf_counter()

    # --- the recipe ---------------------------------------------------------------------

    def fit(self) -> tuple[nn.Module, FitResult]:
        """Train to the step budget or early stop; returns the best epoch's model, plain."""
        self.resume_if_asked()
        self.clock_start = time.perf_counter() - self.state.result.wall_s
        self.state.result.train_targets_per_epoch = self.loader.targets_per_epoch()
        self.log_budget()
        while self.epochs_left():
            if self.train_epoch():
                self.checkpoint()
                raise Preempted(
                    f"{self.plan.name}: stopped by SIGTERM after {self.state.global_batches} "
                    f"batches; checkpoint saved, continue with --resume auto"
                )
            self.loader.prefetch()  # next epoch's workers read while we evaluate
            valid = self.evaluate("valid")
            stop = self.state.end_epoch(valid, self.stopping, self.total_steps)
            for term in self.terms:
                self.state.result.history[-1].update(term.epoch_metrics(self))
            entry = self.record_epoch(valid)
            if self.state.result.best_epoch == self.state.epoch:
                self.accelerator.save_state(str(self.best_dir))
            self.checkpoint()
            last = stop or not self.epochs_left()
            for hook in self.hooks:  # after the save: a sweep hands this checkpoint on
                hook.on_epoch_end(self, entry, last)
            if stop:
                break
        return self.finish()

    def train_epoch(self) -> bool:
        """The rest of the current epoch (all of it unless resumed mid-epoch), with a
        checkpoint every `train.checkpoint_every_steps` optimizer steps. Returns True when
        a preemption was requested (checked after whole steps)."""
        state, every = self.state, self.ws.cfg.train.checkpoint_every_steps
        if state.epoch_batches and self.loader.epoch_complete():
            # Resumed from a checkpoint written after the epoch's last batch (a preemption
            # there): only its evaluation is left; the loader would start the next epoch.
            return False
        self.model.train()
        epoch_start = time.perf_counter()
        batches = iter(self.loader)
        preempted = False
        for _ in progress(range(self.loader.batches_left()), f"{self.plan.name}: train"):
            wait_start = time.perf_counter()
            batch = next(batches)
            state.epoch_wait_s += time.perf_counter() - wait_start
            loss, stepped = self.train_step(batch)
            # Summed where it was computed and read at log points, checkpoints and the
            # epoch's end only: a read per step would stall a GPU's queue every step.
            state.add_loss(loss)
            state.epoch_batches += 1
            state.global_batches += 1
            self.log_step(stepped)
            preempted = preemption_requested()
            if preempted or state.result.steps >= self.total_steps:
                break
            if every and stepped and state.result.steps % every == 0:
                self.checkpoint()
        state.flush_loss()
        state.epoch_train_s += time.perf_counter() - epoch_start
        del batches
        return preempted

    def train_step(self, batch: StreamBatch) -> tuple[torch.Tensor, bool]:
        """Forward, loss, backward and (at a gradient-accumulation boundary) an optimizer
        step on one stream batch. Returns (loss, whether the optimizer stepped)."""
        acc, max_norm = self.accelerator, self.ws.cfg.train.max_grad_norm
        d = self.ws.domains[batch["domain"]]
        with acc.accumulate(self.model), acc.autocast():
            request = train_batch(batch, d, self.ws.device, self.reads_text, self.negatives(batch))
            for term in self.terms:
                request = term.request(self, request)
            out: TrainOutputs = self.model(request)
            ctx = self.loss_context(batch, request)
            loss = self.loss(out, ctx)
            for term in self.terms:
                loss = loss + term.loss(self, out, ctx)
            acc.backward(loss)
            if acc.sync_gradients and max_norm:
                acc.clip_grad_norm_(self.model.parameters(), max_norm)
            self.optimizer.step()
            if acc.sync_gradients:
                self.state.result.steps += 1
                self.scheduler.step()
                for hook in self.hooks:  # before zero_grad: AdaLoRA reads the gradients
                    hook.on_step(self, self.state.result.steps)
            self.optimizer.zero_grad()
        return loss, acc.sync_gradients

    @property
    def progress(self) -> float:
        """The fraction of the stage's step budget done (0 at the start, 1 at the end)."""
        return self.state.result.steps / max(1, self.total_steps)

    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics of the model being trained on the plan's evaluation domains."""
        heads = list(self.loss.weights)
        return self.evaluator.metrics(self.model, self.plan.eval_domains, split, heads)

    def checkpoint(self) -> None:
        """A complete, resumable checkpoint of model, optimizer, RNGs, counters and streams."""
        self.state.flush_loss()
        self.checkpoints.save(
            self.accelerator,
            f"step-{self.state.global_batches:08d}",
            self.state.to_json(self.clock_start),
            self.loader.state_dict(),
            {
                f"{i}/{key}": t.detach().cpu().contiguous()
                for i, hook in enumerate(self.hooks)
                for key, t in hook.state_dict().items()
            },
        )

    # --- the steps' parts -----------------------------------------------------------------

    def negatives(self, batch: StreamBatch) -> torch.Tensor | None:
        """The shared negatives of a cached-mode batch under the sampled softmax (train.loss;
        drawn from the checkpointed generator, so a resumed run draws the same), else None."""
        sampler = self.samplers.get(batch["domain"])
        if sampler is None or is_sampled(batch):
            return None
        return sampler.draw(self.state.gen)

    def loss_context(self, batch: StreamBatch, request: TrainBatch) -> LossContext:
        """What the loss needs besides the outputs for stream batch `batch`, whose model input
        is `request` (TrainBatch): the domain's item shares, sampled/cross-rank candidates."""
        cfg, end_to_end = self.ws.cfg, is_sampled(batch)
        d = self.ws.domains[batch["domain"]]
        sampler = None if end_to_end else self.samplers.get(d.name)
        sampled = end_to_end or sampler is not None
        cross_rank = end_to_end and cfg.distributed.cross_rank_negatives
        return LossContext(
            batch=request,
            share=d.share,
            sampled=sampled,
            cross_rank=cross_rank,
            logq=cfg.model.logq_correction,
            world=self.ws.rank_world[1] if cross_rank else 1,
            generator=self.state.gen,
            negatives=NegativeSampling(
                cfg.model.ctr_negatives,
                by_popularity=cfg.model.ctr_sampling == "popularity",
                hard=cfg.model.ctr_hard_negatives,
            ),
            model=cfg.model,
            seen=lambda: d.seen_columns(batch["users"], request.candidates.items.cpu()),
            drawn=sampler.drawn if sampler is not None else None,
        )

    def epochs_left(self) -> bool:
        """Whether another epoch runs: the step budget (train.max_steps) or the plan's epochs."""
        if self.ws.cfg.train.max_steps:
            return self.state.result.steps < self.total_steps
        return self.state.epoch < self.plan.epochs

    def resume_if_asked(self) -> None:
        """With --resume, restore the stage's newest checkpoint: weights, optimizer, the
        trainer's state and the loader's position within the epoch."""
        latest = self.checkpoints.latest() if self.ws.resume else None
        if latest is None:
            return
        self.state.restore(*self.checkpoints.restore(self.accelerator, latest), self.loader)
        saved = self.checkpoints.hook_tensors(latest)
        for i, hook in enumerate(self.hooks):
            mine = {k.split("/", 1)[1]: t for k, t in saved.items() if k.split("/", 1)[0] == str(i)}
            hook.load_state_dict(mine)
        log(
            f"{self.plan.name}: resumed from {latest.name} (epoch {self.state.epoch + 1}, "
            f"{self.state.epoch_batches} batches into it)"
        )

    def log_budget(self) -> None:
        """Log the training targets per epoch and the budget (optimizer steps or epochs)."""
        cfg = self.ws.cfg
        budget = (
            f"{self.total_steps} optimizer steps"
            if cfg.train.max_steps
            else f"{self.plan.epochs} epochs"
        )
        log(
            f"{self.plan.name}: {self.state.result.train_targets_per_epoch} training targets per "
            f"epoch (data.train_window={cfg.data.train_window}), budget {budget}"
        )

    def log_step(self, stepped: bool) -> None:
        """Every `train.log_every` optimizer steps: the epoch's running loss to the trackers."""
        steps, state = self.state.result.steps, self.state
        if stepped and steps % self.ws.cfg.train.log_every == 0:
            state.flush_loss()
            running = state.running_loss()
            self.accelerator.log({f"{self.plan.name}/train_loss": running}, step=steps)

    def record_epoch(self, valid: dict[str, float]) -> dict:
        """The epoch's history entry, completed with its wall time, logged and tracked."""
        entry, metric = self.state.result.history[-1], self.ws.cfg.eval.metric
        elapsed = time.perf_counter() - self.clock_start
        entry["elapsed_s"] = elapsed  # wall time to this point (time to quality)
        self.accelerator.log(
            {
                f"{self.plan.name}/loss": entry["loss"],
                f"{self.plan.name}/valid_{metric}": valid[metric],
            },
            step=self.state.epoch,
        )
        log(
            f"{self.plan.name} epoch {self.state.epoch} ({self.state.result.steps}/"
            f"{self.total_steps} steps): loss {entry['loss']:.4f}  valid {metric} "
            f"{valid[metric]:.4f}  data wait {entry['data_wait_fraction']:.1%}  ({elapsed:.0f}s)"
        )
        return entry

    def finish(self) -> tuple[nn.Module, FitResult]:
        """Back to the best epoch's weights, as a plain module on every rank."""
        self.loader.close()
        if self.state.result.best_epoch >= 0:
            self.accelerator.load_state(str(self.best_dir))
        barrier()
        if self.ws.is_main:
            shutil.rmtree(self.best_dir, ignore_errors=True)
        result = self.state.result
        result.wall_s = time.perf_counter() - self.clock_start
        result.data_wait_fraction = result.data_wait_s / max(result.train_s, 1e-9)
        self.execution.restore()
        model = self._plain.trained(self.accelerator, self.model)
        self.storage.restore(model)
        self.accelerator.free_memory()
        for hook in self.hooks:
            hook.close(self)
        return model, result
