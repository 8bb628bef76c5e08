import math

import pytest
import torch

from distrec.eval.pointwise import accuracy, auc, gauc, item_means, logloss, macro_f1, mae, rmse

NAN_CASES = [
    (rmse, (torch.empty(0), torch.empty(0))),
    (mae, (torch.empty(0), torch.empty(0))),
    (auc, (torch.empty(0, 3),)),
    (gauc, (torch.empty(0, 3),)),
    (logloss, (torch.empty(0, 3),)),
    (accuracy, (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))),
    (macro_f1, (torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))),
]

EXAMPLE = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.4, 0.3]])


def test_rmse_and_mae_small_example():
    pred, true = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 5.0])
    # errors -1, 0, -2: squares 1, 0, 4 -> mean 5/3; absolute 1, 0, 2 -> mean 1
    assert rmse(pred, true) == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    assert mae(pred, true) == pytest.approx(1.0, abs=1e-12)


def test_auc_pools_all_positives_against_all_negatives():
    # positives 0.9, 0.3; negatives 0.1, 0.5, 0.4, 0.3 -> 2 * 4 = 8 pairs
    # 0.9 beats all four -> 4; 0.3 beats 0.1 (1), ties 0.3 (0.5), loses to 0.5, 0.4 -> 1.5
    # (4 + 1.5) / 8 = 0.6875
    assert auc(EXAMPLE) == pytest.approx(0.6875, abs=1e-12)


def test_gauc_is_the_mean_of_per_user_aucs():
    # user 0: 0.9 above 0.1 and 0.5 -> 2/2 = 1
    # user 1: 0.3 vs 0.4 (below, 0) and 0.3 (tie, 0.5) -> 0.5/2 = 0.25
    # mean (1 + 0.25) / 2 = 0.625 -- differs from the pooled auc 0.6875
    assert gauc(EXAMPLE) == pytest.approx(0.625, abs=1e-12)


def test_all_ties_give_one_half():
    scores = torch.full((3, 4), 0.7)
    assert auc(scores) == pytest.approx(0.5, abs=1e-12)
    assert gauc(scores) == pytest.approx(0.5, abs=1e-12)


def test_perfect_and_reversed_rankings():
    # every positive above every negative
    perfect = torch.tensor([[5.0, 1.0, 2.0], [4.0, 0.0, 3.0]])
    assert auc(perfect) == 1.0 and gauc(perfect) == 1.0
    reversed_ = torch.tensor([[-5.0, 1.0, 2.0], [-4.0, 0.0, 3.0]])  # every positive below
    assert auc(reversed_) == 0.0 and gauc(reversed_) == 0.0


def _brute_force_auc(scores: torch.Tensor) -> float:
    pos, neg = scores[:, 0].tolist(), scores[:, 1:].reshape(-1).tolist()
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_pair_count_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.round(torch.rand(37, 6, generator=gen) * 10) / 10  # 11 values -> many ties
    scores[:, 0] += 0.1 * (seed - 2)  # shift positives so the answer is not always near 0.5
    scores = torch.round(scores * 10) / 10
    assert auc(scores) == pytest.approx(_brute_force_auc(scores), abs=1e-12)


def test_logloss_matches_hand_formula():
    logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    # label 1: -log(sigmoid(x)) = log(1 + e^-x); label 0: -log(1 - sigmoid(x)) = log(1 + e^x)
    # log(1+e^-2) + log(1+e^-1) + log(1+e^0) + log(1+e^1)
    # = 0.126928 + 0.313262 + 0.693147 + 1.313262 = 2.446599, / 4 entries = 0.611650
    want = (
        math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.e)
    ) / 4
    assert logloss(logits) == pytest.approx(want, abs=1e-12)
    assert logloss(logits) == pytest.approx(0.611650, abs=1e-6)


def test_logloss_is_stable_for_large_logits():
    # confident and right: loss ~0; confident and wrong on the positive: (1000 + log 2) / 2
    assert logloss(torch.tensor([[1000.0, -1000.0]])) == pytest.approx(0.0, abs=1e-12)
    assert logloss(torch.tensor([[-1000.0, 0.0]])) == pytest.approx((1000 + math.log(2)) / 2)


def test_accuracy():
    # 3 of 4 equal
    assert accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75


def test_macro_f1_counts_a_class_predicted_but_never_true():
    true = torch.tensor([0, 0, 1, 1, 1])
    pred = torch.tensor([0, 1, 1, 1, 2])
    # class 0: tp 1, fp 0, fn 1 -> 2*1 / (2 + 0 + 1) = 2/3
    # class 1: tp 2 (idx 2, 3), fp 1 (idx 1), fn 1 (idx 4) -> 4 / (4 + 1 + 1) = 2/3
    # class 2: tp 0, fp 1, fn 0 -> 0 (precision + recall = 0)
    # macro over {0, 1, 2}: (2/3 + 2/3 + 0) / 3 = 4/9
    assert macro_f1(pred, true) == pytest.approx(4 / 9, abs=1e-12)


def test_macro_f1_counts_a_class_true_but_never_predicted():
    true = torch.tensor([0, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1])
    # class 0: 2/(2+0+0) = 1; class 1: tp 1, fp 2, fn 0 -> 2/(2+2) = 1/2; class 2: tp 0 -> 0
    # (1 + 1/2 + 0) / 3 = 1/2
    assert macro_f1(pred, true) == pytest.approx(0.5, abs=1e-12)


def test_macro_f1_agrees_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    true, pred = (
        torch.randint(0, 5, (200,), generator=gen),
        torch.randint(1, 7, (200,), generator=gen),
    )
    want = metrics.f1_score(true.numpy(), pred.numpy(), average="macro")
    assert macro_f1(pred, true) == pytest.approx(want, abs=1e-12)


def test_item_means_falls_back_to_global_mean():
    items, ratings = torch.tensor([1, 1, 3]), torch.tensor([4.0, 2.0, 5.0])
    means = item_means(items, ratings, num_items=4)
    # global mean (4 + 2 + 5) / 3 = 11/3; item 1: (4 + 2) / 2 = 3; item 3: 5; items 2, 4 unseen
    g = 11 / 3
    assert means.dtype == torch.float32 and means.shape == (5,)
    assert means.tolist() == pytest.approx([g, 3.0, g, 5.0, g], abs=1e-6)


@pytest.mark.parametrize(("fn", "args"), NAN_CASES, ids=[fn.__name__ for fn, _ in NAN_CASES])
def test_empty_input_gives_nan(fn, args):
    assert math.isnan(fn(*args))


def test_no_negatives_gives_nan():
    assert math.isnan(auc(torch.ones(3, 1))) and math.isnan(gauc(torch.ones(3, 1)))
