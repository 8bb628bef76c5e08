"""The held-out items judged one by one (for the heads' metrics): each evaluated user's
held-out item beside a fixed set of sampled negatives, users sharded across ranks.

The negatives are drawn once per (seed, domain, split), outside each user's history and
held-out item, so every stage and baseline of a run (and every run with the same seed) is
judged on the same pairs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from distrec.data.collate import history_batch
from distrec.eval.evaluate import EvalCase
from distrec.utils.sharding import SINGLE, Shard


@dataclass(frozen=True)
class HeldOutSet:
    """Cases and their fixed negatives [U, k] (catalog indices, row u for cases[u])."""

    cases: list[EvalCase]
    negatives: torch.Tensor

    @property
    def items(self) -> torch.Tensor:
        """[U, 1+k]: each case's held-out item, then its negatives."""
        targets = torch.tensor([c.target for c in self.cases], dtype=torch.long)
        return torch.cat([targets[:, None], self.negatives], 1)


def fixed_negatives(
    cases: list[EvalCase], num_items: int, k: int, seed: int, name: str
) -> HeldOutSet:
    """k distinct items per case from 1..num_items outside its history and held-out item,
    drawn by a generator seeded by (`seed`, `name`); fewer allowed items than k repeat some."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    catalog = np.arange(1, num_items + 1)
    rows = []
    for c in cases:
        allowed = np.setdiff1d(catalog, np.asarray([*c.history, c.target]), assume_unique=False)
        if len(allowed) == 0:
            allowed = catalog
        rows.append(rng.choice(allowed, size=k, replace=len(allowed) < k))
    negatives = torch.from_numpy(np.stack(rows)).long() if rows else torch.zeros(0, k).long()
    return HeldOutSet(cases, negatives)


Judge = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None],
    tuple[torch.Tensor, dict[str, torch.Tensor]],
]


@dataclass(frozen=True)
class Judged:
    """Gathered over ranks, one row per case: users [U], items [U, 1+k], scores [U, 1+k],
    outputs (each head module's [U, ...]) and the held-out ratings [U] (None without)."""

    users: torch.Tensor
    items: torch.Tensor
    scores: torch.Tensor
    outputs: dict[str, torch.Tensor]
    ratings: torch.Tensor | None


def history_ratings_batch(cases: list[EvalCase], max_history: int) -> torch.Tensor | None:
    """[B, L] the histories' ratings aligned with `history_batch` (None without ratings)."""
    if any(c.history_ratings is None for c in cases):
        return None
    length = max(1, min(max_history, max((len(c.history) for c in cases), default=1)))
    out = torch.zeros(len(cases), length)
    for row, c in enumerate(cases):
        r = c.history_ratings[-length:]
        out[row, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


def judge_sharded(
    held: HeldOutSet, judge: Judge, max_history: int, batch_size: int, shard: Shard = SINGLE
) -> Judged:
    """`judge(history, last, items, history_ratings)` -> (scores [B, 1+k], outputs) on this
    rank's cases (rank::world), the same number of calls on every rank (sharded backends),
    gathered so every rank holds every case's result."""
    items = held.items
    mine = list(range(shard.rank, len(held.cases), shard.world))
    per_rank = -(-len(held.cases) // shard.world)
    calls = -(-per_rank // batch_size)
    scores, outputs = [], {}
    for b in range(calls):
        rows = mine[b * batch_size : (b + 1) * batch_size]
        chunk = [held.cases[r] for r in rows] or held.cases[:1]
        history, last = history_batch([c.history for c in chunk], max_history)
        picked = items[rows] if rows else items[:1]
        s, out = judge(history, last, picked, history_ratings_batch(chunk, max_history))
        scores.append(s.float().cpu()[: len(rows)])
        for name, value in out.items():
            outputs.setdefault(name, []).append(value.float().cpu()[: len(rows)])
    local_users = torch.tensor([held.cases[r].user for r in mine], dtype=torch.long)
    ratings = None
    if held.cases and held.cases[0].rating is not None:
        ratings = gather(shard, torch.tensor([held.cases[r].rating for r in mine]).float())
    return Judged(
        gather(shard, local_users),
        gather(shard, items[mine]),
        gather(shard, torch.cat(scores) if scores else torch.zeros(0, items.shape[1])),
        {name: gather(shard, torch.cat(parts)) for name, parts in outputs.items()},
        ratings,
    )


def gather(shard: Shard, local: torch.Tensor) -> torch.Tensor:
    """Every rank's `local`, concatenated in rank order."""
    return torch.cat(shard.gathered(local))
