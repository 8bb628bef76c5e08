"""What goes into and comes out of a recommender: typed, with shapes.

Inputs are frozen dataclasses. Outputs are NamedTuples on purpose: Accelerate's
mixed-precision wrapper converts a model's outputs back to fp32 by walking
tensors, mappings and named tuples (not dataclasses), and the losses and ranks
depend on that conversion being exactly what it was for the dict outputs before.

Shapes: N items in the request, B windows (users), T = max_history positions,
P real (non-padding) training positions, C candidate items, d = model.dim,
H = the LM's hidden size, L = tokens per item text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class ItemBatch:
    """Items of one domain to encode.

    items: [N] catalog indices (>= 1). popularity: [N] log training share (None: no prior).
    features: [N, H] cached LM features (cached mode), or input_ids/attention_mask: [N, L]
    tokens (end-to-end mode); an ID-only item tower reads neither.
    """

    domain: str
    items: torch.Tensor
    popularity: torch.Tensor | None = None
    features: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None


class RatingTotals(NamedTuple):
    """Sum and number of the training ratings of some items ([n] each): the item-side
    counterpart of a history's mean rating, read by the rating and preference heads."""

    sum: torch.Tensor
    count: torch.Tensor


@dataclass(frozen=True)
class AlignBatch:
    """Domain-adversarial alignment inputs riding along a training batch: `items` per domain
    (the batch's source and the target, unlabeled catalog items), `target` the target's
    name, `reversal` the gradient-reversal strength this step; `on` item (content vectors)
    or user (user states after `histories` [n, L] of a domain's items, or None)."""

    items: dict[str, ItemBatch]
    target: str
    reversal: float
    on: str = "item"
    histories: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class TrainBatch:
    """Windows of one domain to train on.

    inputs, targets: [B, T] indices into [pad] + candidates.items (0 = padding); targets are
    the inputs shifted by one. valid: [B] False for a padding window (keeps ranks in step).
    candidates: the items scored against (the whole catalog in cached mode, the batch's
    distinct items end to end). ratings: [B, T] each target's rating (for a rating loss),
    input_ratings: [B, T] each input's (the heads read the history's ratings so far);
    item_ratings: the candidates' training rating totals [C]; all None when the data has none.
    align: domain-adversarial inputs (model.domain_adversarial), else None.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    candidates: ItemBatch
    ratings: torch.Tensor | None = None
    input_ratings: torch.Tensor | None = None
    item_ratings: RatingTotals | None = None
    align: AlignBatch | None = None

    @property
    def domain(self) -> str:
        """The domain the windows and candidates belong to."""
        return self.candidates.domain

    def real_positions(self) -> torch.Tensor:
        """[B, T] True at positions with a real target in a real window."""
        return (self.targets > 0) & self.valid[:, None]


@dataclass(frozen=True)
class UserQuery:
    """Histories to turn into user vectors.

    history: [B, T] catalog indices (0 = padding, right-padded). last: [B] position of each
    history's newest item. table: [N+1, d] the domain's item vectors, row 0 = padding.
    """

    domain: str
    history: torch.Tensor
    last: torch.Tensor
    table: torch.Tensor


@dataclass(frozen=True)
class PairQuery:
    """Histories and, per history, items to judge after it (the held-out item and fixed
    negatives), for the heads' metrics.

    history, last: as in UserQuery; items: [B, m] catalog indices (column 0 the held-out
    item); history_ratings: [B, T] the history's ratings; item_ratings: the held-out items'
    training rating totals [B] (both None without ratings); catalog: the domain's
    ItemVectors, row 0 = padding.
    """

    domain: str
    history: torch.Tensor
    last: torch.Tensor
    items: torch.Tensor
    catalog: ItemVectors
    history_ratings: torch.Tensor | None = None
    item_ratings: RatingTotals | None = None


@dataclass(frozen=True)
class PairInputs:
    """What a head module reads, one row per (user state, item) pair: users [P, d]; items
    [P, d] the item's vector; history_mean, history_count [P] the mean and number of the
    ratings in the history so far; item_mean, item_count [P] the item's mean and number of
    training ratings (in training without the rating being predicted); all 0 without
    ratings; scores [P, m] two-tower scores of each row's judged items (held-out
    evaluation only, else None)."""

    users: torch.Tensor
    items: torch.Tensor
    history_mean: torch.Tensor
    history_count: torch.Tensor
    item_mean: torch.Tensor | None = None
    item_count: torch.Tensor | None = None
    scores: torch.Tensor | None = None


class PairOutputs(NamedTuple):
    """scores: [B, m] fp32 two-tower scores of PairQuery.items; heads: each head module's
    output for the rows' held-out items (column 0)."""

    scores: torch.Tensor
    heads: dict[str, torch.Tensor]


class ItemVectors(NamedTuple):
    """vectors: [N, d] (unit length under model.score=cosine); bias: [N] per-item score offset;
    scale: [1] 1/temperature. score(u, i) = <u, i> * scale + bias_i."""

    vectors: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor


class DomainLogits(NamedTuple):
    """logits: [n] the domain critic's "from the target" logits; labels: [n] 1.0 = target."""

    logits: torch.Tensor
    labels: torch.Tensor


class TrainOutputs(NamedTuple):
    """users: [P, d] user vectors at the real positions; targets: [P] their next item as an
    index into candidates; candidates: [C, d]; candidate_items: [C] catalog indices;
    bias: [C]; scale: [1]; heads: each head module's output at the real positions (e.g.
    heads["rating"] [P]; distrec.heads); domain: the domain critic's logits and labels
    (1 = target) when the batch carried AlignBatch inputs."""

    users: torch.Tensor
    targets: torch.Tensor
    candidates: torch.Tensor
    candidate_items: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor
    heads: dict[str, torch.Tensor] | None = None
    domain: DomainLogits | None = None
