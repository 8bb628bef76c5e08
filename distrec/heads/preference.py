"""The preference head: which rating class the user gives the next item (cross-entropy over
the integer rating levels, or like/dislike at model.like_threshold), judged by accuracy and
macro-F1 on the held-out items."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distrec.config.schema import ModelConfig
from distrec.eval.pointwise import accuracy, macro_f1
from distrec.heads.base import HEADS, Head, HeldOut, LossContext
from distrec.heads.pairs import mlp, pair_features, pair_width
from distrec.heads.rating import target_ratings
from distrec.models.io import PairInputs, TrainOutputs


def num_classes(cfg: ModelConfig) -> int:
    """Rating levels of model.rating_range, or 2 (like/dislike)."""
    if cfg.preference_classes == "binary":
        return 2
    low, high = cfg.rating_range
    return round(high - low) + 1


def rating_classes(ratings: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """[P] class of each rating: its level's index (0 = the lowest), or 1 = like."""
    if cfg.preference_classes == "binary":
        return (ratings >= cfg.like_threshold).long()
    low = cfg.rating_range[0]
    return (ratings.double() - low).round().long().clamp(0, num_classes(cfg) - 1)


class PreferenceClassifier(nn.Module):
    """Class logits = MLP(user, item, user x item, the history's and the item's mean rating
    and count)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        low, high = cfg.rating_range
        self.prior = (low + high) / 2.0
        self.net = mlp(pair_width(cfg.dim), cfg.dim, num_classes(cfg))

    def forward(self, pair: PairInputs) -> torch.Tensor:
        """[P, classes] logits."""
        return self.net(pair_features(pair, self.prior))


def preference(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """Cross-entropy of the next item's rating class."""
    logits = out.heads["preference"]
    if out.users.shape[0] == 0:
        return logits.sum() * 0.0 + out.candidates.sum() * 0.0
    classes = rating_classes(target_ratings(out, ctx), ctx.model).to(logits.device)
    return F.cross_entropy(logits.float(), classes)


def preference_metrics(held: HeldOut, cfg: ModelConfig) -> dict[str, float]:
    """Accuracy and macro-F1 of the most likely class."""
    predicted = held.outputs["preference"].argmax(-1)
    true = rating_classes(held.ratings, cfg)
    return {"accuracy": accuracy(predicted, true), "macro_f1": macro_f1(predicted, true)}


def preference_per_user(held: HeldOut, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Each user's true and predicted rating class."""
    return {
        "preference": rating_classes(held.ratings, cfg),
        "preference_pred": held.outputs["preference"].argmax(-1),
    }


HEADS.add(
    "preference",
    Head(
        loss=preference,
        module=PreferenceClassifier,
        metrics=preference_metrics,
        per_user=preference_per_user,
        reports=("accuracy", "macro_f1"),
        needs_ratings=True,
    ),
)
