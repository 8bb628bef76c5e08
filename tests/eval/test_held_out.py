"""Held-out items beside fixed negatives: the pairs every stage and baseline is judged on."""

import torch

from distrec.eval.evaluate import EvalCase, eval_cases
from distrec.eval.held_out import fixed_negatives, history_ratings_batch, judge_sharded
from distrec.utils.sharding import Shard


def cases():
    return [
        EvalCase(0, [1, 2, 3], 4, [5.0, 4.0, 3.0], 2.0),
        EvalCase(1, [5, 6], 7, [1.0, 2.0], 5.0),
        EvalCase(2, [8], 9, [3.0], 4.0),
    ]


def test_negatives_avoid_history_and_target_and_are_fixed_by_seed_and_name():
    held = fixed_negatives(cases(), 30, 10, seed=0, name="d/test")
    for case, row in zip(held.cases, held.negatives.tolist(), strict=True):
        assert not set(row) & {*case.history, case.target}
        assert len(set(row)) == 10 and all(1 <= i <= 30 for i in row)
    again = fixed_negatives(cases(), 30, 10, seed=0, name="d/test")
    assert torch.equal(held.negatives, again.negatives)
    assert not torch.equal(held.negatives, fixed_negatives(cases(), 30, 10, 0, "d/valid").negatives)
    assert not torch.equal(held.negatives, fixed_negatives(cases(), 30, 10, 1, "d/test").negatives)
    assert held.items[:, 0].tolist() == [4, 7, 9]


def test_a_tiny_catalog_repeats_rather_than_failing():
    held = fixed_negatives([EvalCase(0, [1, 2], 3)], 4, 5, seed=0, name="d")
    assert held.negatives.tolist()[0] == [4] * 5


def test_eval_cases_carry_the_ratings_of_history_and_target():
    seq = {"index": 3, "items": [1, 2, 3, 4], "ratings": [5.0, 4.0, 3.0, 2.0]}
    valid, test = eval_cases([seq], "valid")[0], eval_cases([seq], "test")[0]
    assert (valid.history_ratings, valid.rating) == ([5.0, 4.0], 3.0)
    assert (test.history_ratings, test.rating) == ([5.0, 4.0, 3.0], 2.0)
    assert eval_cases([{"index": 0, "items": [1, 2, 3]}], "test")[0].rating is None


def test_history_ratings_align_with_the_cut_histories():
    batch = history_ratings_batch(cases(), max_history=2)
    assert batch.tolist() == [[4.0, 3.0], [1.0, 2.0], [3.0, 0.0]]
    assert history_ratings_batch([EvalCase(0, [1], 2)], 2) is None


def test_sharded_judging_gathers_every_case_once_with_equal_calls_per_rank():
    held = fixed_negatives(cases(), 30, 4, seed=0, name="d")
    calls = []

    def judge(history, last, items, ratings):
        calls.append(len(items))
        return items.float(), {"rating": ratings[torch.arange(len(last)), last]}

    whole = judge_sharded(held, judge, max_history=5, batch_size=1)
    assert whole.users.tolist() == [0, 1, 2] and torch.equal(whole.items, held.items)
    assert whole.outputs["rating"].tolist() == [3.0, 2.0, 3.0]  # each history's newest rating
    assert whole.ratings.tolist() == [2.0, 5.0, 4.0]
    calls.clear()
    # Rank 1 of 2 holds case 1 only, yet calls the judge as often as rank 0 (cases 0 and 2).
    rank1 = judge_sharded(held, judge, 5, 1, Shard(rank=1, world=2, gather=lambda t: [t]))
    assert rank1.users.tolist() == [1] and len(calls) == 2
