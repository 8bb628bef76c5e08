"""The rating and preference heads: what they read, start from and how they are judged."""

import math

import torch

from distrec.config.schema import ModelConfig
from distrec.heads.base import HeldOut
from distrec.heads.pairs import SHRINK
from distrec.heads.preference import (
    PreferenceClassifier,
    num_classes,
    preference_metrics,
    rating_classes,
)
from distrec.heads.rating import RatingRegressor, rating_metrics
from distrec.models.io import PairInputs
from distrec.models.recommender import history_stats


def test_history_stats_are_running_means_over_real_items():
    items = torch.tensor([[3, 5, 7, 0], [2, 0, 0, 0]])
    ratings = torch.tensor([[4.0, 2.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    mean, count = history_stats(ratings, items)
    assert mean[0].tolist() == [4.0, 3.0, 3.0, 3.0] and count[0].tolist() == [1, 2, 3, 3]
    assert mean[1, 0] == 5.0
    zero_mean, zero_count = history_stats(None, items)
    assert not zero_mean.any() and not zero_count.any()


def test_the_rating_head_starts_from_the_bias_baseline():
    head = RatingRegressor(ModelConfig(dim=8))
    users = torch.tensor([5.0, 0.0]), torch.tensor([3.0, 0.0])  # three 5s; no history
    items = torch.tensor([2.0, 4.0]), torch.tensor([6.0, 0.0])  # six 2s; never rated
    pair = PairInputs(torch.randn(2, 8), torch.randn(2, 8), *users, *items)
    # prior 3 + user deviation (5*3 + 3*SHRINK)/(3 + SHRINK) - 3 + item deviation
    # (2*6 + 3*SHRINK)/(6 + SHRINK) - 3; without ratings both deviations are 0
    user = (5.0 * 3 + 3.0 * SHRINK) / (3 + SHRINK) - 3.0
    item = (2.0 * 6 + 3.0 * SHRINK) / (6 + SHRINK) - 3.0
    assert torch.allclose(head(pair), torch.tensor([3.0 + user + item, 3.0]))


def test_in_training_an_items_mean_leaves_out_the_rating_being_predicted():
    from distrec.models.io import ItemBatch, RatingTotals, TrainBatch
    from distrec.models.recommender import item_stats

    targets = torch.tensor([[2, 3]])
    ratings = torch.tensor([[4.0, 1.0]])
    totals = RatingTotals(torch.tensor([10.0, 9.0, 1.0]), torch.tensor([3.0, 2.0, 1.0]))
    batch = TrainBatch(
        targets,
        targets,
        torch.tensor([True]),
        ItemBatch("d", torch.arange(1, 4)),
        ratings,
        ratings,
        totals,
    )
    mean, count = item_stats(batch, targets[0] - 1, batch.real_positions())
    # item 2: (9 - 4) / (2 - 1) = 5 from 1 other rating; item 3: its only rating is the label
    assert mean.tolist() == [5.0, 0.0] and count.tolist() == [1.0, 0.0]


def test_rating_metrics_clip_to_the_rating_range():
    held = HeldOut(
        torch.zeros(2, 1),
        {"rating": torch.tensor([6.0, 2.0])},
        torch.tensor([5.0, 3.0]),
        torch.zeros(2, 1),
    )
    found = rating_metrics(held, ModelConfig())
    # 6 -> 5 (error 0), 2 (error 1): RMSE sqrt(1/2), MAE 1/2
    assert math.isclose(found["rmse"], math.sqrt(0.5)) and math.isclose(found["mae"], 0.5)


def test_preference_classes_are_rating_levels_or_like_dislike():
    cfg = ModelConfig()
    assert num_classes(cfg) == 5
    assert rating_classes(torch.tensor([1.0, 3.4, 3.6, 5.0]), cfg).tolist() == [0, 2, 3, 4]
    binary = ModelConfig(preference_classes="binary", like_threshold=4.0)
    assert num_classes(binary) == 2
    assert rating_classes(torch.tensor([3.0, 4.0, 5.0]), binary).tolist() == [0, 1, 1]
    head = PreferenceClassifier(binary.model_copy(update={"dim": 8}))
    pair = PairInputs(torch.randn(3, 8), torch.randn(3, 8), torch.zeros(3), torch.zeros(3))
    assert head(pair).shape == (3, 2)


def test_preference_metrics_take_the_most_likely_class():
    logits = torch.tensor([[0.0, 0, 0, 0, 9], [9.0, 0, 0, 0, 0], [0.0, 0, 9, 0, 0]])
    held = HeldOut(
        torch.zeros(3, 1), {"preference": logits}, torch.tensor([5.0, 2.0, 3.0]), torch.zeros(3, 1)
    )
    found = preference_metrics(held, ModelConfig())
    # predicted classes 4, 0, 2 vs true 4, 1, 2: accuracy 2/3; F1 per class (0: 0, 1: 0,
    # 2: 1, 4: 1) -> macro 1/2
    assert math.isclose(found["accuracy"], 2 / 3) and math.isclose(found["macro_f1"], 0.5)
