"""Losses over the recommender's outputs, by name (`model.head`): the extension point for a
new loss/head.

A loss is `fn(out: TrainOutputs, ctx: LossContext) -> scalar tensor`, registered with
`@LOSSES.register("name")` (README "Extending distrec"). Built-ins: `retrieval` (full
softmax over the catalog, or sampled softmax with logQ end to end), `ctr`, `rating`.
Every loss must return a zero that still touches the outputs for a batch with no real
positions (P = 0): such batches keep ranks in step and must not move weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distrec.distributed.collectives import gather_with_grad
from distrec.models.io import TrainBatch, TrainOutputs
from distrec.utils.registry import Registry


@dataclass(frozen=True)
class NegativeSampling:
    """CTR negatives: `per_positive` draws per real position, `by_popularity` in proportion
    to the candidates' training share (else uniformly)."""

    per_positive: int
    by_popularity: bool = False


@dataclass(frozen=True)
class LossContext:
    """What a loss may need besides the outputs.

    batch: the model's input. share: [N+1] each item's share of the domain's training
    interactions (for logQ). sampled: the candidates are a batch's items rather than the
    whole catalog. cross_rank: candidates are gathered from every rank (`world` of them).
    logq: correct sampled logits by log P(item among candidates). generator: for losses
    that draw samples (kept in the checkpoint, so a resumed run draws the same).
    negatives: how sampling losses (ctr) draw negatives.
    """

    batch: TrainBatch
    share: torch.Tensor
    sampled: bool
    cross_rank: bool
    logq: bool
    world: int
    generator: torch.Generator
    negatives: NegativeSampling = NegativeSampling(1)


Loss = Callable[[TrainOutputs, LossContext], torch.Tensor]
LOSSES: Registry[Loss] = Registry("loss", "model.head")


def inclusion_log_prob(share: torch.Tensor, draws: float) -> torch.Tensor:
    """log P(item is among a batch's candidates) for logQ correction.

    A batch's candidates are the distinct items of its windows: `draws` item slots
    (real inputs and targets, over every rank whose candidates are gathered), each
    drawn from the stream with probability `share` (the item's share of training
    interactions). So P(i in batch) = 1 - (1 - share_i)^draws, computed in log
    space (expm1/log1p) so rare items keep their precision. Popular items are in
    almost every batch (log q -> 0) and stop being over-penalised as negatives.
    """
    share = share.double().clamp(min=1e-12, max=1.0 - 1e-12)
    return torch.log(-torch.expm1(draws * torch.log1p(-share))).float()


def item_slots(inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """Item slots in a batch of windows: every real target plus each window's first input."""
    return int((targets > 0).sum()) + int((inputs[:, 0] > 0).sum())


@LOSSES.register("retrieval")
def retrieval(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """Softmax cross-entropy of the next item; logQ-corrected when the candidates are sampled."""
    log_q = None
    if ctx.sampled and ctx.logq:
        # Every rank's batch is drawn alike, so gathered candidates come from world x slots.
        slots = item_slots(ctx.batch.inputs, ctx.batch.targets) * ctx.world
        share = ctx.share[ctx.batch.candidates.items.cpu()]
        log_q = inclusion_log_prob(share, slots).to(out.users.device)
    return retrieval_loss(out, log_q, cross_rank=ctx.cross_rank)


def retrieval_loss(
    out: TrainOutputs, log_q: torch.Tensor | None = None, cross_rank: bool = False
) -> torch.Tensor:
    """Softmax cross-entropy of each position's next item against the candidates.

    Cached mode: candidates = the whole catalog (exact softmax). End-to-end mode:
    the batch's unique items (optionally every rank's), with logQ correction so
    popular items are not over-penalised for appearing as negatives more often.
    Gathered candidates from other ranks that are the row's own positive item (the
    same item in another rank's batch) are masked: they would be false negatives.
    Logits are `out.scale` (1/temperature) x <user, item> + item bias.
    """
    users, targets, cand, bias, ids = (
        out.users,
        out.targets,
        out.candidates,
        out.bias,
        out.candidate_items,
    )
    offset = 0
    if cross_rank:
        cand, offset = gather_with_grad(cand)
        bias, _ = gather_with_grad(bias)
        if log_q is not None:
            log_q, _ = gather_with_grad(log_q)
        if ids is not None:
            ids, _ = gather_with_grad(ids)
    if users.shape[0] == 0:  # an all-padding batch keeps ranks in step; it must not move weights
        return cand.sum() * 0.0 + users.sum() * 0.0 + bias.sum() * 0.0 + out.scale.sum() * 0.0
    logits = (users @ cand.T).float() * out.scale.float() + bias[None, :].float()
    if log_q is not None:
        logits = logits - log_q[None, :].float()
    positives = targets + offset
    if cross_rank and ids is not None:
        logits = logits.masked_fill(duplicate_positives(ids, positives), float("-inf"))
    return F.cross_entropy(logits, positives)


def duplicate_positives(ids: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """[rows, candidates] True where a candidate column is the row's positive item but not
    the positive's own column (a copy gathered from another rank)."""
    same = ids[None, :] == ids[positives][:, None]
    same[torch.arange(len(positives), device=ids.device), positives] = False
    return same


@LOSSES.register("ctr")
def ctr(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """Binary cross-entropy: the next item (label 1) vs sampled items (label 0) that are
    neither the positive nor in the user's window."""
    if out.users.shape[0] == 0:
        return out.candidates.sum() * 0.0 + out.users.sum() * 0.0
    batch = ctx.batch
    weights = None
    if ctx.negatives.by_popularity:
        weights = ctx.share[batch.candidates.items.cpu()].double()
    forbidden = window_items(batch)[batch.real_positions().nonzero()[:, 0]]
    negatives = sample_negatives(
        forbidden.cpu(), ctx.negatives.per_positive, weights, ctx.generator
    )
    return ctr_loss(out, negatives.to(out.targets.device))


def window_items(batch: TrainBatch) -> torch.Tensor:
    """[B, C] True where candidate c is an item of window b (its inputs or targets)."""
    rows, width = batch.inputs.shape[0], batch.candidates.items.shape[0] + 1
    seen = torch.zeros(rows, width, dtype=torch.bool, device=batch.inputs.device)
    seen.scatter_(1, batch.inputs, True)
    seen.scatter_(1, batch.targets, True)
    return seen[:, 1:]  # column 0 is padding


def sample_negatives(
    forbidden: torch.Tensor, k: int, weights: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    """[P, k] candidate indices drawn with replacement, never where `forbidden` [P, C] is
    True, uniformly or by `weights` [C]. A row with nothing allowed (a window holding the
    whole candidate set) draws from everything."""
    base = torch.ones(forbidden.shape[1], dtype=torch.float64) if weights is None else weights
    probs = base[None, :].expand(forbidden.shape[0], -1).masked_fill(forbidden, 0.0)
    empty = probs.sum(1) == 0
    probs[empty] = base
    return torch.multinomial(probs, k, replacement=True, generator=generator)


def ctr_loss(out: TrainOutputs, negatives: torch.Tensor) -> torch.Tensor:
    """BCE of each real position's positive (label 1) vs its `negatives` [P, k] (label 0)."""
    users, targets, cand = out.users, out.targets, out.candidates
    pos = (users * cand[targets]).sum(-1) * out.scale + out.bias[targets]
    neg = (users[:, None, :] * cand[negatives]).sum(-1) * out.scale + out.bias[negatives]
    logits = torch.cat([pos, neg.flatten()]).float()
    labels = torch.cat([torch.ones_like(pos), torch.zeros(neg.numel(), device=pos.device)]).float()
    return F.binary_cross_entropy_with_logits(logits, labels)


@LOSSES.register("rating")
def rating(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """MSE of the rating head on (user state, next item) pairs."""
    batch = ctx.batch
    ratings = batch.ratings[batch.real_positions().to(batch.ratings.device)]
    return rating_loss(out, ratings.to(out.users.device))


def rating_loss(out: TrainOutputs, ratings: torch.Tensor) -> torch.Tensor:
    """MSE of `out.rating` [P] against `ratings` [P]."""
    if out.users.shape[0] == 0:
        return out.candidates.sum() * 0.0
    return F.mse_loss(out.rating.float(), ratings.float())
