"""Per-user metrics agree with metrics_from_ranks; the paired bootstrap is exact on known cases,
finds a planted difference, finds none between permuted equals, and resamples users."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from distrec.eval.bootstrap import (
    bootstrap_ratio,
    paired_ratio,
    paired_sums,
    per_user_metric,
    read_ranks,
    select_stage,
)
from distrec.eval.metrics import metrics_from_ranks

USERS = 943


def frame(ranks, stage="adapt", domain="ml-100k", seed=None) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "stage": stage,
            "split": "test",
            "user": np.arange(len(ranks)),
            "domain": domain,
            "rank": np.asarray(ranks, dtype=np.float64),
        }
    )
    if seed is not None:
        out["seed"] = seed
    return out


def random_ranks(n=USERS, high=120, seed=0) -> np.ndarray:
    """Half-integer ranks included: ties are counted as half."""
    return np.random.default_rng(seed).integers(0, 2 * high, size=n) / 2.0


def test_per_user_means_are_metrics_from_ranks_exactly():
    ranks = torch.tensor(random_ranks(high=60))
    ranks[:5] = torch.tensor([0.0, 9.5, 10.0, 19.5, 49.5])  # both sides of each cut-off
    expected = metrics_from_ranks(ranks, [10, 20, 50])
    for name in ["ndcg@10", "recall@10", "ndcg@20", "recall@20", "ndcg@50", "recall@50", "mrr@10"]:
        values = per_user_metric(ranks, name)
        assert values.dtype == np.float64 and values.shape == (USERS,)
        assert torch.from_numpy(values).mean().item() == expected[name], name
        assert values.mean() == pytest.approx(expected[name], rel=1e-12)
    # numpy input gives the same values as a tensor
    assert np.array_equal(per_user_metric(ranks.numpy(), "ndcg@10"), per_user_metric(ranks))


def test_per_user_metric_values_on_the_cutoff():
    r = np.array([0.0, 1.0, 9.5, 10.0])
    assert per_user_metric(r, "ndcg@10").tolist() == [1.0, 1 / math.log2(3), 1 / math.log2(11.5), 0]
    assert per_user_metric(r, "recall@10").tolist() == [1.0, 1.0, 1.0, 0.0]
    assert per_user_metric(r, "mrr@5").tolist() == [1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="'hit@10'"):
        per_user_metric(r, "hit@10")


def test_known_case_ratio_exact_and_interval_degenerate():
    result = paired_ratio(frame(np.zeros(USERS)), frame(np.full(USERS, 5.0), "baseline"))
    assert result.ratio == pytest.approx(math.log2(7), rel=1e-12)
    assert result.low == pytest.approx(result.ratio, rel=1e-12)
    assert result.high == pytest.approx(result.ratio, rel=1e-12)
    assert (result.n_users, result.n_seeds) == (USERS, 1)


def test_planted_difference_is_found():
    b = random_ranks()
    a = np.maximum(b - 8, 0)  # A ranks every target 8 places higher
    result = paired_ratio(frame(a), frame(b, "baseline"))
    assert result.ratio > 1 and result.low > 1 and result.excludes_one
    assert result.low <= result.ratio <= result.high


def test_same_ranks_permuted_among_users_include_one():
    b = random_ranks()
    a = np.random.default_rng(5).permutation(b)
    result = paired_ratio(frame(a), frame(b, "baseline"))
    assert result.ratio == pytest.approx(1.0, rel=1e-12)
    assert result.low < 1 < result.high and not result.excludes_one


def test_deterministic_for_a_seed():
    a, b = frame(random_ranks(seed=1)), frame(random_ranks(seed=2), "baseline")
    assert paired_ratio(a, b, seed=3) == paired_ratio(a, b, seed=3)
    assert paired_ratio(a, b, seed=3) != paired_ratio(a, b, seed=4)


def test_seeds_are_paired_and_the_user_is_the_resampling_unit():
    a, b = random_ranks(seed=1), random_ranks(seed=2)
    one = paired_ratio(frame(a), frame(b, "baseline"))
    # Three identical seeds add no evidence: resampling users (not (seed, user) pairs)
    # gives the one-seed interval, not one sqrt(3) narrower.
    a3 = pd.concat([frame(a, seed=s) for s in range(3)])
    b3 = pd.concat([frame(b, "baseline", seed=s) for s in range(3)])
    three = paired_ratio(a3, b3)
    assert (three.n_users, three.n_seeds) == (USERS, 3)
    assert three.ratio == pytest.approx(one.ratio, rel=1e-12)
    assert three.low == pytest.approx(one.low, rel=1e-12)
    assert three.high == pytest.approx(one.high, rel=1e-12)
    # a single-run peer (no seed column) is paired with every seed
    peer = paired_ratio(a3, frame(b, "recbole_sasrec"))
    assert peer.n_seeds == 3 and peer.ratio == pytest.approx(one.ratio, rel=1e-12)


def test_only_shared_users_are_paired():
    a = frame(random_ranks(seed=1))
    b = frame(random_ranks(seed=2), "baseline").iloc[100:]
    sum_a, sum_b, _ = paired_sums(a, b)
    assert len(sum_a) == len(sum_b) == USERS - 100
    assert paired_ratio(a, b).n_users == USERS - 100


def test_no_shared_users_is_an_error_naming_the_stages():
    with pytest.raises(ValueError, match=r"adapt .* and baseline .* share no \(domain, user\)"):
        paired_ratio(frame(random_ranks()), frame(random_ranks(), "baseline", domain="ml-1m"))


def test_duplicate_rows_are_an_error():
    both_splits = pd.concat([frame(random_ranks()), frame(random_ranks()).assign(split="valid")])
    with pytest.raises(ValueError, match="several rows per"):
        paired_ratio(both_splits, frame(random_ranks(), "baseline"))


def test_missing_stage_names_the_stage_and_the_file(tmp_path):
    path = tmp_path / "ranks.parquet"
    frame(random_ranks()).to_parquet(path)
    ranks = read_ranks(path)
    assert len(select_stage(ranks, "adapt", "test")) == USERS
    with pytest.raises(
        KeyError, match=r"ranks\.parquet: no ranks for stage 'zero_shot'.*\['adapt'\]"
    ):
        select_stage(ranks, "zero_shot", "test")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.parquet"):
        read_ranks(tmp_path / "nowhere.parquet")


def test_zero_denominator_is_refused():
    with pytest.raises(ValueError, match="undefined"):
        bootstrap_ratio(np.ones(3), np.zeros(3))


def test_2000_resamples_of_943_users_are_fast():
    a, b = per_user_metric(random_ranks(seed=1)), per_user_metric(random_ranks(seed=2))
    bootstrap_ratio(a, b, n_boot=10)  # warm-up
    start = time.perf_counter()
    bootstrap_ratio(a, b, n_boot=2000)
    assert time.perf_counter() - start < 0.5
