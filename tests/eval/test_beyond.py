"""Beyond-accuracy metrics against hand-computed values, and the top-K lists they read."""

import math

import pytest
import torch

from distrec.eval.beyond import ItemProfile, beyond_accuracy, multi_hot, top_items


def test_each_metric_matches_a_hand_computed_example():
    # 4 items; training counts 3, 1, 0, 0 -> smoothed shares 4/8, 2/8, 1/8, 1/8
    counts = torch.tensor([0.0, 3.0, 1.0, 0.0, 0.0])
    features = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    profile = ItemProfile(counts, features, multi_hot(["A", "A B", "B", "C"]))
    top = torch.tensor([[1, 2], [1, 3]])
    m = beyond_accuracy(top, profile, [2])
    assert m["coverage@2"] == 3 / 4  # items 1, 2, 3 of 4
    assert m["novelty@2"] == pytest.approx((1 + 2 + 1 + 3) / 4)  # -log2 of 1/2, 1/4, 1/2, 1/8
    assert m["arp@2"] == pytest.approx((3 + 1 + 3 + 0) / 4)
    assert m["ild@2"] == pytest.approx((0.0 + 1.0) / 2)  # same direction, then orthogonal
    # {A} vs {A, B}: cosine 1/sqrt(2); {A} vs {B}: 0
    assert m["ild_category@2"] == pytest.approx(((1 - 1 / math.sqrt(2)) + 1.0) / 2)


def test_metrics_without_features_or_categories_are_left_out():
    m = beyond_accuracy(torch.tensor([[1, 2]]), ItemProfile(torch.ones(4)), [1, 2])
    assert set(m) == {f"{k}@{n}" for k in ("coverage", "novelty", "arp") for n in (1, 2)}


def test_top_lists_skip_padding_and_history_and_break_ties_by_index():
    scores = torch.tensor([[9.0, 5.0, 5.0, 1.0, 7.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    exclude = torch.tensor([[False, False, False, False, True], [False, False, False, True, False]])
    top = top_items(scores, exclude, 3)
    assert top.tolist() == [[1, 2, 3], [4, 2, 1]]  # never 0 (padding) nor the history item
    assert top_items(scores, exclude, 0).shape == (2, 0)


def test_one_list_for_everyone_has_the_lowest_coverage():
    profile = ItemProfile(torch.arange(101.0))
    same = torch.tensor([[100, 99, 98]]).expand(50, -1)
    varied = torch.randint(1, 101, (50, 3), generator=torch.Generator().manual_seed(0))
    low, high = beyond_accuracy(same, profile, [3]), beyond_accuracy(varied, profile, [3])
    assert low["coverage@3"] == 3 / 100 < high["coverage@3"]
    assert low["novelty@3"] < high["novelty@3"] and low["arp@3"] > high["arp@3"]


def test_short_lists_are_padded_and_padding_is_never_counted():
    scores = torch.tensor([[0.0, 3.0, 2.0, 1.0]])
    exclude = torch.tensor([[False, False, True, True]])  # only item 1 is rankable
    top = top_items(scores, exclude, 3)
    assert top.tolist() == [[1, 0, 0]]
    profile = ItemProfile(torch.tensor([0.0, 1.0, 1.0, 1.0]), torch.eye(4))
    both = torch.cat([top, torch.tensor([[2, 3, 0]])])
    m = beyond_accuracy(both, profile, [3])
    assert m["coverage@3"] == 1.0 and m["arp@3"] == 1.0
    assert m["ild@3"] == 1.0  # only the 2-item list has pairs: orthogonal items
