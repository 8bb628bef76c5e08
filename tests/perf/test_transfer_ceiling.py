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


def _domain(name: str, item_ids: list[str], seed: int):
    import types

    import pandas as pd
    import torch

    rng = np.random.default_rng(seed)
    seqs = []
    for u in range(30):
        n = int(rng.integers(3, 10))
        stamps = np.sort(rng.uniform(0, 100 * 86400, n)).tolist()
        seqs.append(
            {"index": u, "items": rng.integers(1, len(item_ids) + 1, n).tolist(), "ts": stamps}
        )
    catalog = pd.DataFrame({"item_id": item_ids, "item_index": np.arange(1, len(item_ids) + 1)})
    features = torch.randn(len(item_ids) + 1, 8, generator=torch.Generator().manual_seed(seed))
    return types.SimpleNamespace(
        name=name,
        num_items=len(item_ids),
        catalog=catalog,
        sequences=lambda: seqs,
        features=features,
    )


def test_main_scores_every_ingredient_against_popularity(monkeypatch):
    import types

    from perf import transfer_ceiling

    source = _domain("src", [f"m{i}" for i in range(20)], 1)
    target = _domain("tgt", [f"m{i}" for i in range(4, 20)] + ["new0", "new1"], 2)
    cfg = types.SimpleNamespace(data=types.SimpleNamespace(sources=["src"], target="tgt"))
    run = types.SimpleNamespace(domains={"src": source, "tgt": target})
    written = {}
    monkeypatch.setattr(transfer_ceiling, "load", lambda config: (cfg, run))
    monkeypatch.setattr(transfer_ceiling, "write_result", lambda path, r: written.update(r))
    transfer_ceiling.main(["--out", "unused.json"])
    assert written["source"] == "src" and written["target"] == "tgt"
    results = written["results"]
    assert list(results) == [
        "popularity",
        "time_window_popularity",
        "source_cooccurrence",
        "target_cooccurrence_in_domain",
        "text_similarity",
    ]
    assert results["popularity"]["test_over_popularity"] == 1.0
    for name in ("source_cooccurrence", "target_cooccurrence_in_domain", "text_similarity"):
        blend = results[name]["plus_popularity"]
        assert blend["alpha"] in transfer_ceiling.ALPHAS
        assert blend["test_over_popularity"] == pytest.approx(
            blend["test"] / results["popularity"]["test"]
        )
