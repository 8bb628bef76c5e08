"""What the rating and preference heads share: the (user state, item) features they read."""

from __future__ import annotations

import torch
from torch import nn

from distrec.models.io import PairInputs

SHRINK = 3.0  # pseudo-ratings at the scale's middle: a short history says little about a user


def pair_width(dim: int) -> int:
    """Width of `pair_features` for towers of width `dim`."""
    return 3 * dim + 2


def pair_features(pair: PairInputs, prior: float) -> torch.Tensor:
    """[P, 3d + 2]: user, item, their product, the history's mean rating (centred on `prior`;
    0 without ratings) and log(1 + its count)."""
    seen = (pair.history_count > 0).to(pair.users.dtype)
    mean = (pair.history_mean.to(pair.users.dtype) - prior) * seen
    count = torch.log1p(pair.history_count.to(pair.users.dtype))
    return torch.cat(
        [pair.users, pair.items, pair.users * pair.items, mean[:, None], count[:, None]], -1
    )


def shrunk_mean(pair: PairInputs, prior: float) -> torch.Tensor:
    """[P] the history's mean rating shrunk toward `prior` by SHRINK pseudo-ratings."""
    count = pair.history_count.float()
    return (pair.history_mean.float() * count + prior * SHRINK) / (count + SHRINK)


def mlp(width: int, dim: int, out: int) -> nn.Sequential:
    """width -> dim -> out with GELU; the last layer starts at zero, so a head starts from
    its prior (the user's shrunk mean rating, or uniform classes)."""
    net = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, out))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net
