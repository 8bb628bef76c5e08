"""The retrieval head: the next item by softmax over the candidates (the whole catalog, or a
batch's items -- plus shared sampled negatives with train.loss=sampled -- with logQ
correction). It adds no module, and its metrics are the
full-catalog ranking metrics every evaluation reports (distrec.train.evaluation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distrec.distributed.collectives import gather_with_grad
from distrec.heads.base import HEADS, Head, LossContext
from distrec.models.io import TrainOutputs


def inclusion_log_prob(
    share: torch.Tensor, slots: float, proposal: torch.Tensor | None = None, draws: int = 0
) -> torch.Tensor:
    """log P(item is among a batch's candidates) for logQ correction.

    A batch's own candidates are the distinct items of its windows: `slots` item slots
    (real inputs and targets, over every rank whose candidates are gathered), each drawn
    from the stream with probability `share` (the item's share of training interactions).
    A sampled-softmax batch (train.loss) adds `draws` negatives drawn from `proposal`. So
    P(i) = 1 - (1 - share_i)^slots (1 - proposal_i)^draws, computed in log space
    (expm1/log1p) so rare items keep their precision. Popular items are in almost every
    batch (log q -> 0) and stop being over-penalised as negatives.
    """
    share = share.double().clamp(min=1e-12, max=1.0 - 1e-12)
    absent = slots * torch.log1p(-share)
    if proposal is not None and draws:
        absent = absent + draws * torch.log1p(-proposal.double().clamp(max=1.0 - 1e-12))
    return torch.log(-torch.expm1(absent)).float()


def item_slots(inputs: torch.Tensor, targets: torch.Tensor) -> int:
    """Item slots in a batch of windows: every real target plus each window's first input."""
    return int((targets > 0).sum()) + int((inputs[:, 0] > 0).sum())


def retrieval(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """Softmax cross-entropy of the next item; logQ-corrected when the candidates are sampled."""
    log_q = None
    if ctx.sampled and ctx.logq:
        # Every rank's batch is drawn alike, so gathered candidates come from world x slots.
        slots = item_slots(ctx.batch.inputs, ctx.batch.targets) * ctx.world
        items = ctx.batch.candidates.items.cpu()
        drawn = ctx.drawn
        proposal = drawn.proposal[items] if drawn is not None else None
        log_q = inclusion_log_prob(ctx.share[items], slots, proposal, drawn.count if drawn else 0)
        log_q = log_q.to(out.users.device)
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


HEADS.add("retrieval", Head(loss=retrieval))
