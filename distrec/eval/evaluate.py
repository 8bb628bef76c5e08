"""Leave-one-out evaluation over the whole catalog, users sharded across ranks.

The caller supplies how to score (catalog vectors, user vectors) and how to
gather across ranks, so this module knows nothing about training or backends.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from distrec.data.collate import history_batch
from distrec.eval.beyond import top_items
from distrec.eval.metrics import metrics_from_ranks, ranks_from_scores
from distrec.utils.sharding import SINGLE, Shard


@dataclass(frozen=True)
class EvalCase:
    """One user's evaluation: index, history (catalog indices, oldest first), held-out target;
    with ratings, the history's (`history_ratings`) and the target's (`rating`)."""

    user: int
    history: list[int]
    target: int
    history_ratings: list[float] | None = None
    rating: float | None = None


def eval_cases(sequences: list[dict], split: str, max_users: int | None = None) -> list[EvalCase]:
    """valid: history = items[:-2], target = items[-2]; test: history = items[:-1], target = items[-1]."""
    if split not in ("valid", "test"):
        raise ValueError(f"split={split!r}: expected valid or test")
    cut = 2 if split == "valid" else 1
    cases = [case_of(s, cut) for s in sequences if len(s["items"]) >= 3]
    return cases[:max_users] if max_users else cases


def case_of(sequence: dict, cut: int) -> EvalCase:
    """The case holding out item -cut of `sequence` (with its ratings when it has them)."""
    items, ratings = sequence["items"], sequence.get("ratings")
    if ratings is None:
        return EvalCase(sequence["index"], items[:-cut], items[-cut])
    return EvalCase(sequence["index"], items[:-cut], items[-cut], ratings[:-cut], ratings[-cut])


def history_mask(cases: list[EvalCase], num_items: int) -> torch.Tensor:
    """True for the history items each user has seen (the target itself stays rankable,
    so a repeated purchase is still a fair hit)."""
    mask = torch.zeros(len(cases), num_items + 1, dtype=torch.bool)
    for row, c in enumerate(cases):
        mask[row, c.history] = True
        mask[row, c.target] = False
    return mask


@dataclass(frozen=True)
class Ranking:
    """How cases are ranked: over a catalog of `num_items` (indices 1..N), with histories cut
    to `max_history`, `batch_size` users per score call; `top_k` > 0 also keeps each user's
    top-k recommended items (for beyond-accuracy metrics)."""

    num_items: int
    max_history: int
    batch_size: int = 256
    top_k: int = 0


Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def rank_cases(
    cases: list[EvalCase], score: Scorer, how: Ranking, num_batches: int | None = None
) -> torch.Tensor:
    """[len(cases)] fractional ranks; `score(history [B, T], last [B])` -> [B, N+1] scores."""
    return rank_and_list(cases, score, how, num_batches)[0]


def rank_and_list(
    cases: Iterable[EvalCase], score: Scorer, how: Ranking, num_batches: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """([len(cases)] fractional ranks, [len(cases), how.top_k] top items) of `rank_cases`.

    `cases` may be a stream (then `num_batches` is required); only one batch of them is held
    at a time. `num_batches` forces that many score calls (extra ones on a dummy case,
    dropped): sharded backends (ZeRO-3, FSDP) need every rank to run the same number of
    forwards.
    """
    if num_batches is None:
        cases = list(cases)
        num_batches = -(-len(cases) // how.batch_size)
    ranks, tops = [], []
    for chunk in case_batches(cases, how.batch_size, num_batches):
        real = len(chunk)
        chunk = chunk or [EvalCase(-1, [1], 1)]
        history, last = history_batch([c.history for c in chunk], how.max_history)
        scores = score(history, last).float().cpu()
        targets = torch.tensor([c.target for c in chunk])
        seen = history_mask(chunk, how.num_items)
        ranks.append(ranks_from_scores(scores, targets, seen)[:real])
        tops.append(top_items(scores, seen, how.top_k)[:real])
    if not ranks:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, how.top_k, dtype=torch.long)
    return torch.cat(ranks), torch.cat(tops)


def case_batches(
    cases: Iterable[EvalCase], size: int, num_batches: int
) -> Iterator[list[EvalCase]]:
    """Exactly `num_batches` lists of up to `size` cases from the stream (empty lists once it
    runs out: the caller scores a dummy so every rank runs the same forwards)."""
    stream = iter(cases)
    for _ in range(num_batches):
        yield list(itertools.islice(stream, size))


def stream_cases(
    sequences: Iterable[dict], split: str, max_users: int | None = None
) -> Iterator[EvalCase]:
    """`eval_cases` as a stream: one case at a time from a stream of sequences."""
    if split not in ("valid", "test"):
        raise ValueError(f"split={split!r}: expected valid or test")
    cut = 2 if split == "valid" else 1
    cases = (case_of(s, cut) for s in sequences if len(s["items"]) >= 3)
    return itertools.islice(cases, max_users) if max_users else cases


@dataclass(frozen=True)
class UserRanks:
    """Each evaluated user's index [U] and the 0-based fractional rank of their target [U]
    (what ranks.parquet stores, so any two runs can be compared user by user), and their
    top-k recommended items [U, k] when the Ranking asked for them (else [U, 0])."""

    users: torch.Tensor
    ranks: torch.Tensor
    top: torch.Tensor | None = None


def rank_sharded(
    cases: Iterable[EvalCase],
    score: Scorer,
    how: Ranking,
    shard: Shard = SINGLE,
    total: int | None = None,
) -> UserRanks:
    """Each rank ranks users rank::world; ranks are gathered so every rank holds every
    user's rank, identical to a single-process evaluation. `cases` may be a stream of
    `total` cases (a list needs no total)."""
    if total is None:
        cases = list(cases)
        total = len(cases)
    per_rank = -(-total // shard.world)
    mine: list[EvalCase] = []

    def take(stream: Iterable[EvalCase]) -> Iterator[EvalCase]:
        for case in itertools.islice(stream, shard.rank, None, shard.world):
            mine.append(EvalCase(case.user, [], case.target))  # the index is what is kept
            yield case

    ranks, top = rank_and_list(take(cases), score, how, -(-per_rank // how.batch_size))
    users = torch.tensor([c.user for c in mine], dtype=torch.long)
    return UserRanks(
        torch.cat(shard.gathered(users)),
        torch.cat(shard.gathered(ranks)),
        torch.cat(shard.gathered(top)),
    )


def evaluate_sharded(
    cases: list[EvalCase], score: Scorer, how: Ranking, ks: list[int], shard: Shard = SINGLE
) -> dict[str, float]:
    """Metrics of `rank_sharded`: the same on every rank."""
    return metrics_from_ranks(rank_sharded(cases, score, how, shard).ranks, ks)
