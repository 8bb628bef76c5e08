"""Losses over the recommender's outputs: full softmax, sampled softmax with logQ, CTR, rating."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distrec.distributed.accelerator import gather_with_grad


def retrieval_loss(
    out: dict, temperature: float, log_q: torch.Tensor | None = None, cross_rank: bool = False
) -> torch.Tensor:
    """Softmax cross-entropy of each position's next item against the candidates.

    Cached mode: candidates = the whole catalog (exact softmax). End-to-end mode:
    the batch's unique items (optionally every rank's), with logQ correction so
    popular items are not over-penalised for appearing as negatives more often.
    """
    users, targets, cand, bias = out["users"], out["targets"], out["candidates"], out["bias"]
    offset = 0
    if cross_rank:
        cand, offset = gather_with_grad(cand)
        bias, _ = gather_with_grad(bias)
        if log_q is not None:
            log_q, _ = gather_with_grad(log_q)
    if users.shape[0] == 0:  # an all-padding batch keeps ranks in step; it must not move weights
        return cand.sum() * 0.0 + users.sum() * 0.0 + bias.sum() * 0.0
    logits = users @ cand.T / temperature + bias[None, :]
    if log_q is not None:
        logits = logits - log_q[None, :].to(logits.dtype)
    return F.cross_entropy(logits.float(), targets + offset)


def ctr_loss(out: dict, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Binary cross-entropy: the next item (label 1) vs one uniformly sampled item (label 0)."""
    users, targets, cand = out["users"], out["targets"], out["candidates"]
    if users.shape[0] == 0:
        return cand.sum() * 0.0 + users.sum() * 0.0
    negatives = torch.randint(0, cand.shape[0], targets.shape, generator=generator).to(
        targets.device
    )
    bias = out["bias"]
    pos = (users * cand[targets]).sum(-1) / temperature + bias[targets]
    neg = (users * cand[negatives]).sum(-1) / temperature + bias[negatives]
    logits = torch.cat([pos, neg]).float()
    labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).float()
    return F.binary_cross_entropy_with_logits(logits, labels)


def rating_loss(out: dict, ratings: torch.Tensor) -> torch.Tensor:
    """MSE of the rating head on (user state, next item) pairs; `ratings` per real position."""
    if out["users"].shape[0] == 0:
        return out["candidates"].sum() * 0.0
    return F.mse_loss(out["rating"].float(), ratings.float())
