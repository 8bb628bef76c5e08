"""A stage's training progress: counters, history, early stopping, and its checkpoint form."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LRScheduler

from distrec.config import RunConfig
from distrec.data.loader import MixtureLoader
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
