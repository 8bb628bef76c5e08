"""What the rating and preference heads share: the (user state, item) features they read
and the bias baseline they start from."""

from __future__ import annotations

import torch
from torch import nn

from distrec.models.io import PairInputs

SHRINK = 3.0  # pseudo-ratings at the scale's middle: a few ratings say little about a mean


def pair_width(dim: int) -> int:
    """Width of `pair_features` for towers of width `dim`."""
    return 3 * dim + 4


def pair_features(pair: PairInputs, prior: float) -> torch.Tensor:
    """[P, 3d + 4]: user, item, their product, then the history's and the item's mean rating
    (centred on `prior`; 0 without ratings) and log(1 + their counts)."""
    dtype = pair.users.dtype
    stats = []
    for mean, count in ((pair.history_mean, pair.history_count), item_side(pair)):
        seen = (count > 0).to(dtype)
        stats += [((mean.to(dtype) - prior) * seen)[:, None], torch.log1p(count.to(dtype))[:, None]]
    return torch.cat([pair.users, pair.items, pair.users * pair.items, *stats], -1)


def item_side(pair: PairInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The item's (mean, count) of training ratings; zeros when the pairs carry none."""
    if pair.item_mean is None or pair.item_count is None:
        zeros = torch.zeros_like(pair.history_mean)
        return zeros, zeros
    return pair.item_mean, pair.item_count


def shrunk(mean: torch.Tensor, count: torch.Tensor, prior: float) -> torch.Tensor:
    """[P] `mean` of `count` ratings shrunk toward `prior` by SHRINK pseudo-ratings."""
    count = count.float()
    return (mean.float() * count + prior * SHRINK) / (count + SHRINK)


def bias_baseline(pair: PairInputs, prior: float) -> torch.Tensor:
    """[P] prior + the user's shrunk deviation + the item's shrunk deviation: the classic
    baseline predictor, from each domain's own ratings (so it holds on a new domain)."""
    user = shrunk(pair.history_mean, pair.history_count, prior) - prior
    item = shrunk(*item_side(pair), prior) - prior
    return prior + user + item


def mlp(width: int, dim: int, out: int) -> nn.Sequential:
    """width -> dim -> out with GELU; the last layer starts at zero, so a head starts from
    its prior (the bias baseline, or uniform classes)."""
    net = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, out))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net
