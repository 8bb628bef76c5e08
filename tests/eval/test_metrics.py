import math

import pytest
import torch

from distrec.eval.evaluate import EvalCase, Ranking, eval_cases, evaluate_sharded, history_mask
from distrec.eval.metrics import NonFiniteScores, metrics_from_ranks, random_ndcg, ranks_from_scores
from distrec.utils.sharding import Shard


def test_rank_counts_strictly_higher_plus_half_ties():
    scores = torch.tensor([[0.0, 5.0, 3.0, 3.0, 3.0, 1.0]])
    ranks = ranks_from_scores(scores, torch.tensor([2]), torch.zeros(1, 6, dtype=torch.bool))
    assert ranks.item() == 1 + 0.5 * 2  # item 1 is higher, items 3 and 4 tie


def test_masked_items_and_padding_are_not_ranked():
    scores = torch.tensor([[9.0, 5.0, 3.0, 4.0]])
    exclude = torch.tensor([[False, True, False, False]])
    assert ranks_from_scores(scores, torch.tensor([2]), exclude).item() == 1  # only item 3 above


def test_nan_scores_are_an_error_not_a_hit():
    scores = torch.tensor([[0.0, float("nan"), 1.0]])
    with pytest.raises(NonFiniteScores):
        ranks_from_scores(scores, torch.tensor([2]), torch.zeros(1, 3, dtype=torch.bool))


def test_metric_values():
    m = metrics_from_ranks(torch.tensor([0.0, 1.0, 30.0]), [10, 20, 50])
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m["recall@50"] == pytest.approx(1.0)
    assert m["mrr@10"] == pytest.approx((1 + 0.5) / 3)


def test_leave_one_out_cases_and_mask_keep_the_target_rankable():
    seqs = [{"index": 0, "items": [1, 2, 3, 2]}, {"index": 1, "items": [4, 5]}]
    valid = eval_cases(seqs, "valid")
    test = eval_cases(seqs, "test")
    assert valid == [EvalCase(0, [1, 2], 3)] and test == [EvalCase(0, [1, 2, 3], 2)]
    mask = history_mask(test, 5)
    assert mask[0].tolist() == [False, True, False, True, False, False]


def test_constant_scores_rank_at_random():
    """An untrained (constant) scorer must land at the random-ranking NDCG, never above."""
    n = 500
    seqs = [{"index": u, "items": [(u * 7 + j) % n + 1 for j in range(6)]} for u in range(400)]
    cases = eval_cases(seqs, "test")
    m = evaluate_sharded(
        cases, lambda h, last: torch.zeros(h.shape[0], n + 1), Ranking(n, 10), [10]
    )
    # all ties: rank = (unmasked - 1) / 2 for everyone, far outside the top 10
    assert m["ndcg@10"] == 0.0 and random_ndcg(n) < 0.01


def test_sharded_evaluation_equals_single_process():
    n = 50
    gen = torch.Generator().manual_seed(0)
    seqs = [
        {"index": u, "items": torch.randint(1, n + 1, (5,), generator=gen).tolist()}
        for u in range(37)
    ]
    cases = eval_cases(seqs, "test")
    table = torch.randn(n + 1, 8, generator=gen)

    def score(history, last):
        return table[history[torch.arange(len(last)), last]] @ table.T

    single = evaluate_sharded(cases, score, Ranking(n, 4, batch_size=4), [10, 20])
    shards = [
        evaluate_sharded(
            cases,
            score,
            Ranking(n, 4, batch_size=4),
            [10, 20],
            Shard(rank=r, world=3, gather=lambda t: [t]),
        )
        for r in range(3)
    ]
    ranks_total = sum(s["users"] for s in shards)
    assert ranks_total == single["users"]
    merged = sum(s["ndcg@10"] * s["users"] for s in shards) / ranks_total
    assert merged == pytest.approx(single["ndcg@10"], abs=1e-12)
