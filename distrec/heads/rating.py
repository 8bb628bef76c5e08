"""The rating head: the explicit rating the user gives the next item (MSE), judged by RMSE
and MAE on the held-out items. It reads the user state, the item and the ratings of the
history so far and the item's mean training rating, and predicts the bias baseline (the
user's and the item's shrunk deviations from the scale's middle) plus a learned offset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.config.schema import ModelConfig
from distrec.eval.pointwise import mae, rmse
from distrec.heads.base import HEADS, Head, HeldOut, LossContext
from distrec.heads.pairs import bias_baseline, mlp, pair_features, pair_width
from distrec.models.io import PairInputs, TrainOutputs


class RatingRegressor(nn.Module):
    """rating = prior + user deviation + item deviation (both shrunk) + MLP(user, item,
    user x item, the history's and the item's mean rating and count)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        low, high = cfg.rating_range
        self.prior = (low + high) / 2.0
        self.net = mlp(pair_width(cfg.dim), cfg.dim, 1)

    def forward(self, pair: PairInputs) -> torch.Tensor:
        """[P] predicted ratings."""
        offset = self.net(pair_features(pair, self.prior)).squeeze(-1)
        return bias_baseline(pair, self.prior).to(offset.dtype) + offset


def target_ratings(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """[P] the real positions' target ratings (the domain check guarantees the data has them)."""
    batch = ctx.batch
    if batch.ratings is None:
        raise ValueError(
            f"domain {batch.domain!r} has no ratings; a rating or preference head needs them"
        )
    return batch.ratings[batch.real_positions().to(batch.ratings.device)].to(out.users.device)


def rating(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """MSE of the rating head's predictions against the next items' ratings."""
    predicted = out.heads["rating"]
    if out.users.shape[0] == 0:
        return predicted.sum() * 0.0 + out.candidates.sum() * 0.0
    return F.mse_loss(predicted.float(), target_ratings(out, ctx).float())


def clip_ratings(predicted: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """`predicted` ratings clipped to model.rating_range (float64): how every rating
    prediction, a head's or a reference's, is judged."""
    low, high = cfg.rating_range
    return predicted.double().clamp(low, high)


def clipped_ratings(held: HeldOut, cfg: ModelConfig) -> torch.Tensor:
    """[U] the rating head's predictions, clipped."""
    return clip_ratings(held.outputs["rating"], cfg)


def rating_metrics(held: HeldOut, cfg: ModelConfig) -> dict[str, float]:
    """RMSE and MAE of the predictions, clipped to model.rating_range."""
    predicted = clipped_ratings(held, cfg)
    return {"rmse": rmse(predicted, held.ratings), "mae": mae(predicted, held.ratings)}


def rating_per_user(held: HeldOut, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Each user's held-out rating and its (clipped) prediction."""
    return {"rating": held.ratings.double(), "rating_pred": clipped_ratings(held, cfg)}


HEADS.add(
    "rating",
    Head(
        loss=rating,
        module=RatingRegressor,
        metrics=rating_metrics,
        per_user=rating_per_user,
        reports=("rmse", "mae"),
        lower_is_better=("rmse", "mae"),
        needs_ratings=True,
    ),
)
