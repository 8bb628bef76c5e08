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
class LossContext:
    """What a loss may need besides the outputs.

    batch: the model's input. share: [N+1] each item's share of the domain's training
    interactions (for logQ). sampled: the candidates are a batch's items rather than the
    whole catalog. cross_rank: candidates are gathered from every rank (`world` of them).
    logq: correct sampled logits by log P(item among candidates). generator: for losses
    that draw samples (kept in the checkpoint, so a resumed run draws the same).
    """

    batch: TrainBatch
    share: torch.Tensor
    sampled: bool
    cross_rank: bool
    logq: bool
    world: int
    generator: torch.Generator


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
    """Binary cross-entropy: the next item (label 1) vs one uniformly sampled item (label 0)."""
    return ctr_loss(out, ctx.generator)


def ctr_loss(out: TrainOutputs, generator: torch.Generator) -> torch.Tensor:
    """BCE of the positive vs one negative drawn with `generator`, per real position."""
    users, targets, cand = out.users, out.targets, out.candidates
    if users.shape[0] == 0:
        return cand.sum() * 0.0 + users.sum() * 0.0
    negatives = torch.randint(0, cand.shape[0], targets.shape, generator=generator).to(
        targets.device
    )
    pos = (users * cand[targets]).sum(-1) * out.scale + out.bias[targets]
    neg = (users * cand[negatives]).sum(-1) * out.scale + out.bias[negatives]
    logits = torch.cat([pos, neg]).float()
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float()
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
