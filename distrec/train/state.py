"""A stage's training progress: counters, history, early stopping, and its checkpoint form."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LRScheduler

from distrec.config import RunConfig
from distrec.data.loader import MixtureLoader
from distrec.distributed.collectives import sum_over_ranks, world_size
from distrec.heads.base import better
from distrec.utils.progress import log


@dataclass
class FitResult:
    """What a finished `Trainer.fit` reports (and stages.json keeps per stage)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid: float = -1.0
    wall_s: float = 0.0
    data_wait_fraction: float = 0.0
    data_wait_s: float = 0.0
    train_s: float = 0.0
    steps: int = 0
    train_targets_per_epoch: int = 0


@dataclass(frozen=True)
class EarlyStopping:
    """Stop after `patience` evaluations whose `metric` did not beat the best by > min_delta
    (lower is better for the metrics a head minimises, e.g. rmse)."""

    metric: str
    patience: int
    min_delta: float

    @classmethod
    def of(cls, cfg: RunConfig) -> EarlyStopping:
        """The run's rule: eval.metric with train.early_stopping_patience and _min_delta."""
        t = cfg.train
        return cls(cfg.eval.metric, t.early_stopping_patience, t.early_stopping_min_delta)


@dataclass
class TrainState:
    """A stage's progress that a checkpoint carries besides tensors (those go through
    accelerator.save_state: model, optimizer, RNG states)."""

    gen: torch.Generator
    scheduler: LRScheduler | None = None
    result: FitResult = field(default_factory=FitResult)
    epoch: int = 0  # completed epochs
    epoch_batches: int = 0  # batches done in the current epoch
    epoch_loss: float = 0.0  # flushed losses summed over the epoch's steps and every rank
    epoch_wait_s: float = 0.0
    epoch_train_s: float = 0.0
    global_batches: int = 0
    bad_epochs: int = 0
    # This rank's losses since the last flush_loss, summed where they were computed, in
    # float64: float32 losses then add up exactly, so where the flushes fall (log points, a
    # preemption's checkpoint) cannot change a bit of the epoch's loss, and a resumed run's
    # history equals the uninterrupted one's.
    pending_loss: torch.Tensor | None = None

    COUNTERS = (
        "epoch",
        "epoch_batches",
        "epoch_loss",
        "epoch_wait_s",
        "epoch_train_s",
        "global_batches",
        "bad_epochs",
    )

    def add_loss(self, loss: torch.Tensor) -> None:
        """Add a step's loss to the pending sum without reading it (no host sync)."""
        loss = loss.detach().to(_exact_sum_dtype(loss.device))
        self.pending_loss = loss if self.pending_loss is None else self.pending_loss + loss

    def flush_loss(self) -> None:
        """Move the pending sum, summed over ranks, into `epoch_loss` (a collective: every
        rank calls it at the same points, which are data-independent)."""
        pending = self.pending_loss
        if pending is None:
            pending = torch.zeros((), dtype=torch.float64)
        # Summed over ranks so the curve means the global batch (and is the same on every
        # rank, which is what rank 0's checkpoint records for all of them).
        self.epoch_loss += sum_over_ranks(pending).item()
        self.pending_loss = None

    def loss_sum(self) -> float:
        """The flushed steps' rank-mean losses, summed."""
        return self.epoch_loss / world_size()

    def running_loss(self) -> float:
        """The epoch's mean loss over its flushed steps (and every rank)."""
        return self.loss_sum() / max(1, self.epoch_batches)

    def end_epoch(self, valid: dict, rule: EarlyStopping, total_steps: int) -> bool:
        """Record the finished epoch; True when training should stop (patience or step budget)."""
        r, score = self.result, valid[rule.metric]
        self.epoch += 1
        r.data_wait_s += self.epoch_wait_s
        r.train_s += self.epoch_train_s
        r.history.append(
            {
                "epoch": self.epoch,
                "loss": self.running_loss(),
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
        if r.best_epoch < 0 or better(rule.metric, score, r.best_valid, rule.min_delta):
            r.best_valid, r.best_epoch, self.bad_epochs = score, self.epoch, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= rule.patience:
                log(f"early stop after epoch {self.epoch} (best {r.best_epoch})")
                return True
        return r.steps >= total_steps

    def to_json(self, start: float) -> dict:
        """Counters, generator, scheduler and results as JSON (`start`: the stage's clock)."""
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

    def restore(self, saved: dict, data: dict, loader: MixtureLoader) -> None:
        """Back to a checkpoint's `saved` trainer JSON and the loader's `data` state."""
        for key in self.COUNTERS:
            setattr(self, key, saved[key])
        self.gen.set_state(torch.tensor(saved["gen"], dtype=torch.uint8))
        self.scheduler.load_state_dict(saved["scheduler"])
        self.result = FitResult(**saved["result"])
        loader.load_state_dict(data)


def _exact_sum_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; there the sum is float32 and a resume may differ in the last bit.
    return torch.float32 if device.type == "mps" else torch.float64
