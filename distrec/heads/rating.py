"""The rating head: the explicit rating the user gives the next item (MSE), judged by RMSE
and MAE on the held-out items. It reads the user state, the item and the ratings of the
history so far, and predicts the user's (shrunk) mean rating plus a learned offset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.config.schema import ModelConfig
from distrec.eval.pointwise import mae, rmse
from distrec.heads.base import HEADS, Head, HeldOut, LossContext
from distrec.heads.pairs import mlp, pair_features, pair_width, shrunk_mean
from distrec.models.io import PairInputs, TrainOutputs


class RatingRegressor(nn.Module):
    """rating = shrunk history mean + MLP(user, item, user x item, history mean, count)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        low, high = cfg.rating_range
        self.prior = (low + high) / 2.0
        self.net = mlp(pair_width(cfg.dim), cfg.dim, 1)

    def forward(self, pair: PairInputs) -> torch.Tensor:
        """[P] predicted ratings."""
        offset = self.net(pair_features(pair, self.prior)).squeeze(-1)
        return shrunk_mean(pair, self.prior).to(offset.dtype) + offset


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


def rating_metrics(held: HeldOut, cfg: ModelConfig) -> dict[str, float]:
    """RMSE and MAE of the predictions, clipped to model.rating_range."""
    low, high = cfg.rating_range
    predicted = held.outputs["rating"].double().clamp(low, high)
    return {"rmse": rmse(predicted, held.ratings), "mae": mae(predicted, held.ratings)}


HEADS.add(
    "rating",
    Head(
        loss=rating,
        module=RatingRegressor,
        metrics=rating_metrics,
        reports=("rmse", "mae"),
        lower_is_better=("rmse", "mae"),
        needs_ratings=True,
    ),
)
