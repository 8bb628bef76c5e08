"""Leave-one-out evaluation over the whole catalog, users sharded across ranks.

The caller supplies how to score (catalog vectors, user vectors) and how to
gather across ranks, so this module knows nothing about training or backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distrec.data.collate import history_batch
from distrec.eval.metrics import metrics_from_ranks, ranks_from_scores


@dataclass(frozen=True)
class EvalCase:
    user: int
    history: list[int]
    target: int


def eval_cases(sequences: list[dict], split: str, max_users: int | None = None) -> list[EvalCase]:
    """valid: history = items[:-2], target = items[-2]; test: history = items[:-1], target = items[-1]."""
    if split not in ("valid", "test"):
        raise ValueError(f"split={split!r}: expected valid or test")
    cut = 2 if split == "valid" else 1
    cases = [
        EvalCase(s["index"], s["items"][:-cut], s["items"][-cut])
        for s in sequences
        if len(s["items"]) >= 3
    ]
    return cases[:max_users] if max_users else cases


def history_mask(cases: list[EvalCase], num_items: int) -> torch.Tensor:
    """True for the history items each user has seen (the target itself stays rankable,
    so a repeated purchase is still a fair hit)."""
    mask = torch.zeros(len(cases), num_items + 1, dtype=torch.bool)
    for row, c in enumerate(cases):
        mask[row, c.history] = True
        mask[row, c.target] = False
    return mask


def rank_cases(
    cases: list[EvalCase],
    num_items: int,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_history: int,
    batch_size: int = 256,
    num_batches: int | None = None,
) -> torch.Tensor:
    """Fractional ranks for `cases`; `score(history, last)` -> [B, N+1] scores.

    `num_batches` forces that many score calls (extra ones on a dummy case, dropped):
    sharded backends (ZeRO-3, FSDP) need every rank to run the same number of forwards.
    """
    total = num_batches if num_batches is not None else -(-len(cases) // batch_size)
    ranks = []
    for b in range(total):
        chunk = cases[b * batch_size : (b + 1) * batch_size]
        real = len(chunk)
        chunk = chunk or [EvalCase(-1, [1], 1)]
        history, last = history_batch([c.history for c in chunk], max_history)
        scores = score(history, last)
        targets = torch.tensor([c.target for c in chunk])
        r = ranks_from_scores(scores.float().cpu(), targets, history_mask(chunk, num_items))
        ranks.append(r[:real])
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class UserRanks:
    """Each evaluated user's index [U] and the 0-based fractional rank of their target [U]
    (what ranks.parquet stores, so any two runs can be compared user by user)."""

    users: torch.Tensor
    ranks: torch.Tensor


def rank_sharded(
    cases: list[EvalCase],
    num_items: int,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_history: int,
    rank: int = 0,
    world: int = 1,
    gather: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    batch_size: int = 256,
) -> UserRanks:
    """Each rank ranks users rank::world; ranks are gathered so every rank holds every
    user's rank, identical to a single-process evaluation."""
    per_rank = -(-len(cases) // world)
    mine = cases[rank::world]
    ranks = rank_cases(
        mine, num_items, score, max_history, batch_size, num_batches=-(-per_rank // batch_size)
    )
    users = torch.tensor([c.user for c in mine], dtype=torch.long)
    if world > 1 and gather:
        return UserRanks(torch.cat(gather(users)), torch.cat(gather(ranks)))
    return UserRanks(users, ranks)


def evaluate_sharded(
    cases: list[EvalCase],
    num_items: int,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ks: list[int],
    max_history: int,
    rank: int = 0,
    world: int = 1,
    gather: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Metrics of `rank_sharded`: the same on every rank."""
    found = rank_sharded(cases, num_items, score, max_history, rank, world, gather, batch_size)
    return metrics_from_ranks(found.ranks, ks)
