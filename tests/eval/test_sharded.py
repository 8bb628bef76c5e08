"""Ranking against a catalog split across ranks (distrec.eval.sharded) gives the ranks and
top lists of ranking the whole row, ties and history masking included. Ranks are simulated
by threads sharing a gather (the real 2-process check is tests/distributed/test_catalog.py)."""

from __future__ import annotations

import threading

import pytest
import torch

from distrec.eval.beyond import top_items
from distrec.eval.evaluate import EvalCase, history_mask
from distrec.eval.metrics import NonFiniteScores, ranks_from_scores
from distrec.eval.sharded import Blocks, CatalogPart, rank_block_sharded
from distrec.utils.sharding import Shard


def thread_shards(world: int) -> list[Shard]:
    """`world` Shards whose gather exchanges tensors between threads."""
    barrier = threading.Barrier(world)
    slots: list = [None] * world

    def make(rank: int) -> Shard:
        def gather(t: torch.Tensor) -> list[torch.Tensor]:
            barrier.wait()
            slots[rank] = t.clone()
            barrier.wait()
            out = list(slots)
            barrier.wait()
            return out

        return Shard(rank, world, gather, barrier.wait)

    return [make(r) for r in range(world)]


def part_of(vectors: torch.Tensor, bias: torch.Tensor, blocks: Blocks, shard: Shard):
    owned = blocks.owned(shard)
    return CatalogPart(
        blocks.rows,
        owned,
        [vectors[a:b] for a, b in owned],
        [bias[a:b] for a, b in owned],
        torch.ones(1),
        vectors.shape[1],
    )


def dot(users, vectors, bias):
    return users @ vectors.T + bias


def world_of(cases, users, vectors, bias, size, world, k):
    blocks, results = Blocks(vectors.shape[0], size), [None] * world
    shards = thread_shards(world)

    def run(r: int) -> None:
        part = part_of(vectors, bias, blocks, shards[r])
        results[r] = rank_block_sharded(users, cases, part, dot, k, shards[r])

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture()
def problem():
    gen = torch.Generator().manual_seed(0)
    n, dim, b = 37, 4, 9
    # Integer-valued vectors: many exact ties, which the combination must count like one row.
    vectors = torch.randint(-2, 3, (n + 1, dim), generator=gen).float()
    vectors[0] = 0.0
    bias = torch.zeros(n + 1)
    users = torch.randint(-2, 3, (b, dim), generator=gen).float()
    cases = [
        EvalCase(u, torch.randint(1, n + 1, (5,), generator=gen).tolist(), int(t))
        for u, t in enumerate(torch.randint(1, n + 1, (b,), generator=gen))
    ]
    scores = users @ vectors.T + bias
    targets = torch.tensor([c.target for c in cases])
    seen = history_mask(cases, n)
    return cases, users, vectors, bias, ranks_from_scores(scores, targets, seen), (scores, seen)


# (38, 2) and (20, 3): ranks that own no block still take part in every collective.
@pytest.mark.parametrize(("size", "world"), [(1000, 1), (5, 1), (5, 2), (7, 3), (38, 2), (20, 3)])
def test_block_counts_and_merged_tops_equal_whole_row_ranking(problem, size, world):
    cases, users, vectors, bias, ranks, (scores, seen) = problem
    k = 10
    expected_top = top_items(scores, seen, k)
    for got_ranks, got_top in world_of(cases, users, vectors, bias, size, world, k):
        assert torch.equal(got_ranks, ranks)
        assert torch.equal(got_top, expected_top)


def test_blocks_cover_every_row_once_and_ranks_own_disjoint_blocks():
    blocks = Blocks(23, 5)
    assert blocks.all() == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    owned = [blocks.owned(Shard(r, 2)) for r in range(2)]
    assert owned == [[(0, 5), (10, 15), (20, 23)], [(5, 10), (15, 20)]]


def test_lookup_hands_every_rank_the_rows_other_ranks_own(problem):
    _, _, vectors, bias, _, _ = problem
    blocks, shards = Blocks(vectors.shape[0], 4), thread_shards(2)
    idx = torch.tensor([0, 3, 9, 36, 5, 5])
    out = [None, None]

    def run(r):
        out[r] = part_of(vectors, bias, blocks, shards[r]).lookup(idx, shards[r])

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for v, b in out:
        assert torch.equal(v, vectors[idx]) and torch.equal(b, bias[idx])


def test_non_finite_scores_are_an_error_not_a_hit(problem):
    cases, users, vectors, bias, _, _ = problem
    vectors = vectors.clone()
    vectors[12, 0] = float("nan")
    blocks = Blocks(vectors.shape[0], 10)
    with pytest.raises(NonFiniteScores):
        rank_block_sharded(users, cases, part_of(vectors, bias, blocks, Shard()), dot, 5)
