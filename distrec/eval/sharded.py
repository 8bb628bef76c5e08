"""Ranking against a catalog split across ranks (eval.catalog=sharded).

The catalog's table rows 0..N (row 0 = padding) are cut into blocks of `size` rows; rank
r owns blocks r, r + world, ... and holds only their vectors. Every rank scores every user
batch against its own blocks, and the ranks are combined from per-block counts: a user's
rank is (items strictly higher) + 0.5 x (other items tied) with the target's score taken
from the block that holds it, so it is the rank `metrics.ranks_from_scores` gives over the
whole row. Top-k lists are merged from each rank's per-block top-k with the same tie rule as
`beyond.top_items` (lower catalog index first). No rank holds the whole catalog's vectors
or a users x catalog score matrix: at most a users x (its blocks) one.

Scores are computed block by block in both layouts (distrec.train.evaluation scores a
replicated catalog with the same blocks), so the two give identical metrics, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distrec.eval.beyond import ordered_by_score_then_index, top_with_ties
from distrec.eval.evaluate import EvalCase
from distrec.eval.metrics import NonFiniteScores
from distrec.utils.sharding import SINGLE, Shard

# (users [B, d], vectors [n, d], bias [n]) -> scores [B, n] in fp32.
BlockScorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Blocks:
    """A catalog's table rows 0..N cut into blocks of `size` rows (the last may be shorter)."""

    rows: int
    size: int

    def all(self) -> list[tuple[int, int]]:
        """Every block's [start, stop) rows, in order."""
        return [(s, min(s + self.size, self.rows)) for s in range(0, self.rows, self.size)]

    def owned(self, shard: Shard = SINGLE) -> list[tuple[int, int]]:
        """The blocks rank `shard.rank` owns: every world-th, starting at its rank."""
        return self.all()[shard.rank :: shard.world]


@dataclass
class CatalogPart:
    """This rank's blocks of a catalog of `rows` table rows (N + 1): `vectors[i]` [n_i, d]
    and `bias[i]` [n_i] of rows `blocks[i]` = [start, stop), the catalog's `scale` [1] and
    the vectors' width `dim`. With fewer blocks than ranks some ranks own none: keep
    eval.catalog_block at most N / world so that every rank holds a share."""

    rows: int
    blocks: list[tuple[int, int]]
    vectors: list[torch.Tensor]
    bias: list[torch.Tensor]
    scale: torch.Tensor
    dim: int  # the vectors' width, known also to a rank that owns no block

    def lookup(self, idx: torch.Tensor, shard: Shard = SINGLE) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors [M, d], bias [M]) of catalog rows `idx` [M] (the same on every rank):
        each rank fills the rows it owns and the parts are summed (x + 0 = x exactly)."""
        out = torch.zeros(len(idx), self.dim + 1)
        for (start, stop), v, b in zip(self.blocks, self.vectors, self.bias, strict=True):
            inside = (idx >= start) & (idx < stop)
            if inside.any():
                local = idx[inside] - start
                out[inside] = torch.cat(
                    [v[local].float().cpu(), b[local].float().cpu()[:, None]], 1
                )
        if shard.world > 1:
            out = torch.stack(shard.gathered(out)).sum(0)
        return out[:, :-1], out[:, -1]


def block_scores(
    users: torch.Tensor, cases: list[EvalCase], part: CatalogPart, score: BlockScorer
) -> list[tuple[int, torch.Tensor]]:
    """(start row, scores [B, n]) of each of this rank's blocks, with every case's history
    masked (-inf; its target stays rankable) and the padding row too."""
    scored = []
    for (start, stop), v, b in zip(part.blocks, part.vectors, part.bias, strict=True):
        s = score(users, v, b).float().cpu()
        check_finite(s, start)
        s = s.masked_fill(history_in_block(cases, start, stop), float("-inf"))
        if start == 0:
            s[:, 0] = float("-inf")
        scored.append((start, s))
    return scored


def rank_block_sharded(
    users: torch.Tensor,
    cases: list[EvalCase],
    part: CatalogPart,
    score: BlockScorer,
    top_k: int = 0,
    shard: Shard = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] fractional ranks, [B, top_k] top items) of `cases` (every rank passes the same
    cases and user vectors [B, d]) against the whole catalog, which `part` holds a slice of."""
    targets = torch.tensor([c.target for c in cases])
    scored = block_scores(users, cases, part, score)
    target_score = torch.zeros(len(cases), dtype=torch.float64)
    owner = torch.zeros(len(cases), dtype=torch.float64)
    for start, s in scored:
        here = (targets >= start) & (targets < start + s.shape[1])
        rows = here.nonzero().flatten()
        target_score[rows] = s[rows, targets[rows] - start].double()
        owner[rows] = 1.0
    # Exactly one rank owns each target: summing the parts hands every rank its score.
    target_score = gathered_sum(target_score, shard)
    if not bool((gathered_sum(owner, shard) == 1.0).all()):
        raise ValueError("a target is outside the catalog's blocks; the catalog part is wrong")
    t = target_score.float()[:, None]
    higher = torch.zeros(len(cases), dtype=torch.float64)
    equal = torch.zeros(len(cases), dtype=torch.float64)
    for _, s in scored:
        higher += (s > t).sum(1).double()
        equal += (s == t).sum(1).double()
    higher, equal = gathered_sum(higher, shard), gathered_sum(equal, shard)
    ranks = higher + 0.5 * (equal - 1.0)
    k = min(top_k, part.rows - 1)  # as top_items: never more than the catalog's N items
    return ranks, merged_top(scored, len(cases), k, shard)[1]


def top_block_sharded(
    users: torch.Tensor,
    histories: list[list[int]],
    part: CatalogPart,
    score: BlockScorer,
    k: int,
    shard: Shard = SINGLE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, k] scores, [B, k] items) of each user's k best items outside their history, over
    the whole catalog (batch inference: there is no held-out target)."""
    cases = [EvalCase(row, h, 0) for row, h in enumerate(histories)]
    scored = block_scores(users, cases, part, score)
    return merged_top(scored, len(cases), min(k, part.rows - 1), shard)


def history_in_block(cases: list[EvalCase], start: int, stop: int) -> torch.Tensor:
    """[B, stop - start] True for each case's history items in the block (its target stays
    rankable, as in evaluate.history_mask)."""
    mask = torch.zeros(len(cases), stop - start, dtype=torch.bool)
    for row, c in enumerate(cases):
        h = torch.tensor(c.history, dtype=torch.long)
        h = h[(h >= start) & (h < stop)]
        mask[row, h - start] = True
        if start <= c.target < stop:
            mask[row, c.target - start] = False
    return mask


def check_finite(scores: torch.Tensor, start: int) -> None:
    """NaN/inf scores are an error, never a hit (the padding row 0 does not count)."""
    real = scores[:, 1:] if start == 0 else scores
    if not torch.isfinite(real).all():
        bad = (~torch.isfinite(real)).any(1).nonzero().flatten().tolist()[:5]
        raise NonFiniteScores(
            f"non-finite scores for {len(bad)}+ users (rows {bad}); check the model"
        )


def gathered_sum(local: torch.Tensor, shard: Shard) -> torch.Tensor:
    """The sum over ranks of `local` (itself on one process)."""
    if shard.world == 1:
        return local
    return torch.stack(shard.gathered(local)).sum(0)


def merged_top(
    scored: list[tuple[int, torch.Tensor]], users: int, k: int, shard: Shard
) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, k] scores, [B, k] items) of each user's k best items over every rank's blocks:
    per-block top-k, gathered and merged by (score descending, catalog index ascending), as
    beyond.top_items ranks. Masked (-inf) places hold item 0."""
    if k <= 0:
        return torch.zeros(users, 0), torch.zeros(users, 0, dtype=torch.long)
    values, index = [torch.zeros(users, 0)], [torch.zeros(users, 0, dtype=torch.long)]
    for start, s in scored:
        top_values, top_index = top_with_ties(s, min(k, s.shape[1]))
        values.append(top_values)
        index.append(top_index + start)
    values, index = torch.cat(values, 1), torch.cat(index, 1)
    if shard.world > 1:  # ranks own different numbers of blocks: pad to the widest
        most = max(int(n) for n in shard.gathered(torch.tensor([values.shape[1]])))
        pad = most - values.shape[1]
        values = torch.cat([values, torch.full((users, pad), float("-inf"))], 1)
        index = torch.cat([index, torch.zeros(users, pad, dtype=torch.long)], 1)
        values = torch.cat(shard.gathered(values), 1)
        index = torch.cat(shard.gathered(index), 1)
    best_values, best_index = ordered_by_score_then_index(values, index, k)
    return best_values, best_index.masked_fill(best_values == float("-inf"), 0)
