"""The CTR head: will the user click this item? Binary cross-entropy of the next item
(label 1) against K sampled items (label 0) that are neither the positive nor in the
user's window, on the two-tower score through a learned calibration (scale, shift), so the
predicted click probability is calibrated while the ranking is the towers'. Judged by AUC,
GAUC (per user) and logloss on each held-out item against the user's fixed negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.config.schema import ModelConfig
from distrec.eval.pointwise import auc, gauc, logloss, user_auc
from distrec.heads.base import HEADS, Head, HeldOut, LossContext
from distrec.models.io import PairInputs, TrainBatch, TrainOutputs


class ScoreCalibration(nn.Module):
    """logit = scale x two-tower score + shift. Returns the judged items' logits when the
    pairs carry scores (held-out evaluation), else [2] (scale, shift) for the loss, which
    draws its negatives after the forward pass."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        # Shape [1] each: DeepSpeed broadcasts parameters as byte views (no 0-dim tensors).
        self.scale = nn.Parameter(torch.ones(1))
        self.shift = nn.Parameter(torch.zeros(1))

    def forward(self, pair: PairInputs) -> torch.Tensor:
        """[B, m] calibrated logits of `pair.scores`, or [2] (scale, shift) without scores."""
        if pair.scores is None:
            return torch.cat([self.scale, self.shift])
        return pair.scores * self.scale + self.shift


def ctr(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """BCE of each real position's next item vs sampled negatives that are neither in its
    window nor anywhere in the user's training history."""
    if out.users.shape[0] == 0:
        zero = out.candidates.sum() * 0.0 + out.users.sum() * 0.0
        return zero + (calibration(out).sum() * 0.0)
    batch = ctx.batch
    weights = None
    if ctx.negatives.by_popularity:
        weights = ctx.share[batch.candidates.items.cpu()].double()
    forbidden = window_items(batch).cpu()
    if ctx.seen is not None:
        forbidden = forbidden | ctx.seen()
    forbidden = forbidden[batch.real_positions().nonzero()[:, 0].cpu()]
    k, hard = ctx.negatives.per_positive, ctx.negatives.hard
    parts = []
    if hard:
        parts.append(hard_negatives(out, forbidden, hard))
    if k > hard:
        parts.append(sample_negatives(forbidden, k - hard, weights, ctx.generator))
    negatives = torch.cat(parts, 1).to(out.targets.device)
    return ctr_loss(out, negatives)


def calibration(out: TrainOutputs) -> torch.Tensor:
    """The CTR head's [2] (scale, shift), or (1, 0) when the model has no CTR module."""
    if out.heads and "ctr" in out.heads:
        return out.heads["ctr"]
    return torch.tensor([1.0, 0.0], device=out.users.device)


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


@torch.no_grad()
def hard_negatives(out: TrainOutputs, forbidden: torch.Tensor, k: int) -> torch.Tensor:
    """[P, k] the allowed candidates the model scores highest for each position (no
    gradient flows through the choice)."""
    scores = (out.users @ out.candidates.T).float() * out.scale.float() + out.bias.float()
    scores = scores.cpu().masked_fill(forbidden, float("-inf"))
    return scores.topk(min(k, scores.shape[1]), dim=1).indices


def ctr_loss(out: TrainOutputs, negatives: torch.Tensor) -> torch.Tensor:
    """BCE of each real position's positive (label 1) vs its `negatives` [P, k] (label 0),
    on calibrated two-tower logits."""
    users, targets, cand = out.users, out.targets, out.candidates
    scale, shift = calibration(out).float()
    # index_select, not cand[negatives]: advanced indexing's backward accumulates repeated
    # rows in a thread-dependent order on CPU, so the same run gave different losses.
    pos = (users * cand.index_select(0, targets)).sum(-1) * out.scale
    pos = pos + out.bias.index_select(0, targets)
    rows = cand.index_select(0, negatives.flatten()).view(*negatives.shape, -1)
    neg = (users[:, None, :] * rows).sum(-1) * out.scale
    neg = neg + out.bias.index_select(0, negatives.flatten()).view(negatives.shape)
    logits = torch.cat([pos, neg.flatten()]).float() * scale + shift
    labels = torch.cat([torch.ones_like(pos), torch.zeros(neg.numel(), device=pos.device)]).float()
    return F.binary_cross_entropy_with_logits(logits, labels)


def click_logits(held: HeldOut) -> torch.Tensor:
    """[U, 1+k] calibrated logits (the two-tower scores when the model has no CTR module)."""
    return held.outputs.get("ctr", held.scores)


def ctr_metrics(held: HeldOut, cfg: ModelConfig) -> dict[str, float]:
    """AUC, GAUC and logloss of the held-out items against the fixed negatives."""
    logits = click_logits(held)
    return {"auc": auc(logits), "gauc": gauc(logits), "logloss": logloss(logits)}


def ctr_per_user(held: HeldOut, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Each user's AUC of their held-out item against their negatives (GAUC's terms)."""
    return {"ctr_auc": user_auc(click_logits(held))}


HEADS.add(
    "ctr",
    Head(
        loss=ctr,
        module=ScoreCalibration,
        metrics=ctr_metrics,
        per_user=ctr_per_user,
        reports=("auc", "gauc", "logloss"),
        lower_is_better=("logloss",),
    ),
)
