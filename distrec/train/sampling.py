"""Sampled softmax for large catalogs (train.loss): which cached-mode batches score the whole
catalog, and the candidates of those that do not.

A sampled batch's candidates are its own items (every history item and target of its
windows) plus `num_negatives` items drawn for the whole batch, shared by all its rows (the
in-batch + sampled "mixed" negatives of industrial two-tower training). Only those items
are encoded and scored, so a step's cost does not grow with the catalog. The retrieval loss
corrects each candidate's logit by log P(item is a candidate) (distrec.heads.retrieval),
which makes the sampled softmax an estimate of the full one rather than a popularity-biased
loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distrec.config.schema import TrainConfig
from distrec.config.training import SAMPLED_ABOVE
from distrec.heads.base import DrawnNegatives


def uses_sampled_softmax(train: TrainConfig, num_items: int) -> bool:
    """Whether cached-mode batches of a catalog of `num_items` use the sampled softmax."""
    if train.loss == "auto":
        return num_items > SAMPLED_ABOVE
    return train.loss == "sampled"


def catalog_sampling(train: TrainConfig, share: torch.Tensor) -> DrawnNegatives:
    """The negatives of `train.negative_sampling` for a domain whose items have training
    shares `share` [N+1]: uniform over 1..N, or in proportion to the share."""
    proposal = torch.ones_like(share, dtype=torch.float64)
    if train.negative_sampling == "popularity":
        proposal = share.double().clone()
    proposal[0] = 0.0
    return DrawnNegatives(train.num_negatives, proposal / proposal.sum())


class NegativeSampler:
    """Draws one domain's shared negatives for each sampled batch (train.loss), in
    O(count log N) per batch from a cumulative table built once."""

    def __init__(self, drawn: DrawnNegatives) -> None:
        self.drawn = drawn
        self.cdf = torch.cumsum(drawn.proposal, 0)

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """[count] catalog indices (1..N) drawn with replacement from the proposal."""
        u = torch.rand(self.drawn.count, generator=generator, dtype=torch.float64)
        picked = torch.searchsorted(self.cdf, u * self.cdf[-1], right=True)
        # u * total can round up to the total itself; the last item takes it.
        return picked.clamp(1, len(self.cdf) - 1)


@dataclass(frozen=True)
class SampledWindows:
    """A batch's candidates `items` [C] (distinct catalog indices, ascending) and its windows
    re-indexed into them: `inputs` / `targets` hold 1 + the candidate column (0 = padding)."""

    items: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor


def sampled_windows(
    inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> SampledWindows:
    """The distinct items of the windows and the `negatives`, and the windows re-indexed."""
    every = torch.cat([inputs.reshape(-1), targets.reshape(-1), negatives])
    items, inverse = torch.unique(every, return_inverse=True)
    # 0 (padding) sorts first when present; it is not a candidate.
    padded = bool(items[0] == 0)
    local = inverse + (0 if padded else 1)
    items = items[1:] if padded else items
    n_in = inputs.numel()
    return SampledWindows(
        items,
        local[:n_in].reshape(inputs.shape),
        local[n_in : n_in + targets.numel()].reshape(targets.shape),
    )
