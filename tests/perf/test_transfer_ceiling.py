"""The transfer-ceiling scorers: co-occurrence, the training part of a sequence, and the
NDCG plumbing through distrec's evaluation protocol."""

import numpy as np
import pytest

from perf.transfer_ceiling import cooccurrence_cosine, ndcg10, training_part

SEQS = [
    {"index": 0, "items": [1, 2, 3, 4], "ts": [0.0, 1.0, 2.0, 3.0]},
    {"index": 1, "items": [2, 1, 4, 3], "ts": [5.0, 4.0, 6.0, 7.0]},
    {"index": 2, "items": [3, 4, 1, 2], "ts": [8.0, 9.0, 10.0, 11.0]},
]


def test_training_part_drops_valid_and_test_items_and_sorts_by_time():
    items, stamps = training_part(SEQS)
    assert items.tolist() == [1, 2, 1, 2, 3, 4]
    assert stamps.tolist() == sorted(stamps.tolist())


def test_cooccurrence_is_a_symmetric_cosine_without_self_pairs():
    cos = cooccurrence_cosine(SEQS, 4)
    assert np.allclose(cos, cos.T) and np.all(np.diag(cos) == 0)
    # 1 and 2 are trained together by all three users, 1 and 3 by none.
    assert cos[1, 2] > 0 and cos[1, 3] == 0


@pytest.mark.parametrize("split", ["valid", "test"])
def test_an_oracle_scorer_gets_ndcg_one_and_a_reversed_one_less(split):
    cut = 2 if split == "valid" else 1

    def oracle(s, history):
        scores = np.zeros(7, dtype=np.float32)  # items 5 and 6 are never seen
        scores[s["items"][-cut]] = 1.0
        return scores

    assert ndcg10(SEQS, 6, split, oracle) == pytest.approx(1.0)
    assert ndcg10(SEQS, 6, split, lambda s, h: -oracle(s, h)) < 1.0
