"""Training a RecBole model to its own stopping rule, under distrec's protocol: every
epoch's validation NDCG@10 ranked the distrec way, a wall-time cap, and recovery of a run
that was stopped (its per-epoch log and best checkpoint). Runs in .venv-peers."""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from perf.peers.protocol import ndcg_at


@dataclass(frozen=True)
class Loaded:
    """RecBole's config, dataset and train/valid/test loaders for this run."""

    config: Any
    dataset: Any
    train: Any
    valid: Any
    test: Any


class WallCap(Exception):
    """Raised before an epoch that would end past the wall-time cap."""


@dataclass
class EpochClock:
    """Timing, the protocol's validation curve and the wall-time cap of one training run."""

    model: str
    cap_min: float | None
    curve: list[dict] = field(default_factory=list)
    t0: float | None = None
    epoch: int = -1
    epoch_t0: float | None = None
    durations: list[float] = field(default_factory=list)

    def start_epoch(self, epoch_idx: int) -> None:
        """Raise WallCap if this epoch is predicted to end past the cap."""
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        elapsed = now - self.t0
        cap_s = self.cap_min * 60.0 if self.cap_min else None
        # the next epoch is predicted to take as long as the slowest of the last three
        next_s = max(self.durations[-3:], default=0.0)
        if cap_s is not None and self.curve and elapsed + next_s > cap_s:
            raise WallCap(f"epoch {epoch_idx} would end past the {self.cap_min} min cap")
        self.epoch, self.epoch_t0 = epoch_idx, now

    def record_validation(self, *, valid_t0: float, ndcg: float, loss) -> None:
        """Append the epoch's point to the curve and print its `[peers]` log line."""
        done = time.perf_counter()
        self.curve.append(
            {
                "epoch": self.epoch,
                "elapsed_s": round(done - self.t0, 3),
                "train_s": round(valid_t0 - self.epoch_t0, 3),
                "valid_s": round(done - valid_t0, 3),
                "train_loss": None if loss is None else float(loss),
                "valid_ndcg@10": ndcg,
            }
        )
        self.durations.append(done - self.epoch_t0)
        print(
            f"[peers] {self.model} epoch {self.epoch}: loss {loss:.4f} valid ndcg@10 {ndcg:.5f} "
            f"({done - self.epoch_t0:.1f}s, {done - self.t0:.0f}s total)",
            flush=True,
        )


def protocol_trainer(config, model, *, clock: EpochClock, rank: Callable[[str], torch.Tensor]):
    """RecBole's trainer for the model, validating under distrec's protocol with a wall cap."""
    from recbole.utils import get_trainer

    trainer_cls = get_trainer(config["MODEL_TYPE"], config["model"])

    class ProtocolTrainer(trainer_cls):
        """RecBole's trainer, with validation under distrec's protocol and a wall cap."""

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            clock.start_epoch(epoch_idx)
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)

        def _valid_epoch(self, valid_data, show_progress=False):
            t = time.perf_counter()
            ndcg = ndcg_at(rank("valid"), 10)
            loss = self.train_loss_dict.get(clock.epoch)
            clock.record_validation(valid_t0=t, ndcg=ndcg, loss=loss)
            return ndcg, {"ndcg@10": ndcg}

    return ProtocolTrainer(config, model)


@dataclass(frozen=True)
class Training:
    """How training ended, its wall time and RecBole's best checkpoint."""

    reason: str
    wall_s: float
    checkpoint: Path


def train_or_recover(args: argparse.Namespace, trainer, loaded: Loaded, clock: EpochClock):
    """Fit (until early stopping, max epochs or the cap) or, with --recover, read the log."""
    if args.recover:
        clock.curve.extend(curve_from_log(Path(args.recover[1]), args.model))
        wall = clock.curve[-1]["elapsed_s"] if clock.curve else float("nan")
        training = Training("capped", wall, Path(args.recover[0]).resolve())
    else:
        training = fit(args, trainer, loaded, clock)
    if args.model == "Pop":  # RecBole's TraditionalTrainer: one counting epoch
        training = Training("single_pass", training.wall_s, training.checkpoint)
    return training


def fit(args: argparse.Namespace, trainer, loaded: Loaded, clock: EpochClock) -> Training:
    """RecBole's fit, saving its best checkpoint; a WallCap ends it as capped."""
    reason = "early_stopping"
    t_start = time.perf_counter()
    try:
        trainer.fit(loaded.train, loaded.valid, verbose=False, saved=True, show_progress=False)
        if clock.curve and len(clock.curve) >= args.epochs:
            reason = "max_epochs"
    except WallCap as stop:
        reason = "capped"
        print(f"[peers] {args.model}: {stop}", flush=True)
    return Training(reason, time.perf_counter() - t_start, Path(trainer.saved_model_file))


def load_best(model, checkpoint: Path) -> int:
    """Load RecBole's best checkpoint into `model`; returns its epoch."""
    # RecBole's own file, written moments ago by this process or, with --recover, by the
    # killed run of this same driver: it pickles the Config, so torch >= 2.6's weights_only
    # default cannot read it.
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        ckpt = torch.load(checkpoint, map_location="cpu")
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    model.load_state_dict(ckpt["state_dict"])
    model.load_other_parameter(ckpt.get("other_parameter"))
    return int(ckpt["epoch"])


def curve_from_log(log: Path, model: str) -> list[dict]:
    """Per-epoch curve from this driver's own `[peers] <model> epoch N: ...` log lines."""
    pat = re.compile(
        rf"^\[peers\] {re.escape(model)} epoch (\d+): loss (\S+) valid ndcg@10 (\S+) "
        r"\((\S+)s, (\S+)s total\)"
    )
    curve = []
    for line in log.read_text().splitlines():
        m = pat.match(line)
        if m:
            curve.append(
                {
                    "epoch": int(m[1]),
                    "elapsed_s": float(m[5]),
                    "epoch_s": float(m[4]),
                    "train_loss": float(m[2]),
                    "valid_ndcg@10": float(m[3]),
                }
            )
    return curve
