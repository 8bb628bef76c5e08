"""What a head is, the registry of heads (`model.heads`), and what its parts receive.

A head is trained on the shared towers with its own loss (a term of the joint loss,
weighted by `model.heads`), may add a small module of its own (built into the model, run
inside its forward: every sharded backend needs parameters to be used there), and may
judge itself on the held-out items with its own metrics. A new head is one file with
`HEADS.add("name", Head(...))` (README "Extending distrec"); the training loop never
changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from distrec.config.schema import ModelConfig, RunConfig
from distrec.models.io import TrainBatch, TrainOutputs
from distrec.utils.registry import Registry


@dataclass(frozen=True)
class NegativeSampling:
    """CTR negatives: `per_positive` per real position, `by_popularity` in proportion to the
    candidates' training share (else uniformly), `hard` of them the model's own top-scoring
    allowed candidates."""

    per_positive: int
    by_popularity: bool = False
    hard: int = 0


@dataclass(frozen=True)
class DrawnNegatives:
    """Negatives a batch drew for the sampled softmax: `count` with replacement from
    `proposal` [N+1] (what logQ correction needs to know of them)."""

    count: int
    proposal: torch.Tensor


@dataclass(frozen=True)
class LossContext:
    """What a loss may need besides the outputs.

    batch: the model's input. share: [N+1] each item's share of the domain's training
    interactions (for logQ). sampled: the candidates are a batch's items rather than the
    whole catalog. cross_rank: candidates are gathered from every rank (`world` of them).
    logq: correct sampled logits by log P(item among candidates). generator: for losses
    that draw samples (kept in the checkpoint, so a resumed run draws the same).
    drawn: the negatives a sampled-softmax batch added to its candidates (count, proposal
    [N+1]; train.loss), None when the candidates are the batch's items alone or the catalog.
    negatives: how sampling losses (ctr) draw negatives. model: the model section (rating
    range, preference classes). seen: [B, C] each window's user's whole training history as
    candidate columns (computed when called: only sampling losses need it).
    """

    batch: TrainBatch
    share: torch.Tensor
    sampled: bool
    cross_rank: bool
    logq: bool
    world: int
    generator: torch.Generator
    negatives: NegativeSampling = NegativeSampling(1)
    model: ModelConfig = field(default_factory=ModelConfig)
    seen: Callable[[], torch.Tensor] | None = None
    drawn: DrawnNegatives | None = None


class HeldOut(NamedTuple):
    """One domain's held-out items as the heads are judged on them (gathered over ranks, one
    row per evaluated user): scores [U, 1+k] of the two-tower score for the held-out item
    (column 0) and the user's k fixed sampled negatives; outputs: each head module's output
    for the held-out item (e.g. rating [U]); ratings [U] the held-out items' ratings (None
    when the domain has none); popularity [U, 1+k] the same items' training counts."""

    scores: torch.Tensor
    outputs: dict[str, torch.Tensor]
    ratings: torch.Tensor | None
    popularity: torch.Tensor


Loss = Callable[[TrainOutputs, LossContext], torch.Tensor]
Metrics = Callable[[HeldOut, ModelConfig], dict[str, float]]
PerUser = Callable[[HeldOut, ModelConfig], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Head:
    """One head: its `loss`; optionally the `module` it adds to the model (built from the
    model config; its output at every training position lands in `TrainOutputs.heads[name]`)
    and the `metrics` it reports on the held-out items (`reports` names them), with
    `per_user` columns [U] behind them (heads.parquet: paired comparisons of two stages user
    by user); `lower_is_better`: its metrics that are minimised (eval.metric);
    `needs_ratings`: every domain it trains on must have them."""

    loss: Loss
    module: Callable[[ModelConfig], nn.Module] | None = None
    metrics: Metrics | None = None
    per_user: PerUser | None = None
    reports: tuple[str, ...] = ()
    lower_is_better: tuple[str, ...] = ()
    needs_ratings: bool = False


HEADS: Registry[Head] = Registry("head", "model.heads")


def target_heads(cfg: RunConfig) -> dict[str, float]:
    """The heads trained on the target (adapt and the target-only baselines)."""
    return cfg.stages.adapt.heads or cfg.model.heads


def run_heads(cfg: RunConfig) -> list[str]:
    """Every head some stage of the run trains (their modules are built into every model, so
    the pretrained base can be adapted with any of them)."""
    return list(dict.fromkeys([*cfg.model.heads, *target_heads(cfg)]))


def head_modules(cfg: RunConfig, names: list[str] | None = None) -> dict[str, nn.Module]:
    """Fresh modules of the heads `names` (default `run_heads`) that add one."""
    out = {}
    for name in names if names is not None else run_heads(cfg):
        head = HEADS.get(name)
        if head.module is not None:
            out[name] = head.module(cfg.model)
    return out


def lower_is_better(metric: str) -> bool:
    """Whether `metric` is minimised: a registered head says so (rmse, mae, logloss);
    ranking metrics are maximised."""
    return any(metric in HEADS.get(n).lower_is_better for n in HEADS.names())


def better(metric: str, a: float, b: float, margin: float = 0.0) -> bool:
    """Whether `a` beats `b` on `metric` by more than `margin`."""
    return a < b - margin if lower_is_better(metric) else a > b + margin


def reporting_head(metric: str) -> str | None:
    """The registered head that reports `metric` (None for a ranking metric)."""
    return next((n for n in HEADS.names() if metric in HEADS.get(n).reports), None)
