"""Ranks with an explicit tie rule, and the metrics computed from them.

rank = (items scoring strictly higher) + 0.5 * (other items scoring equal), over
the unmasked catalog. A NaN or inf score anywhere is an error, never a hit.
"""

from __future__ import annotations

import math

import torch

from distrec.config.metric_names import MRR_K


class NonFiniteScores(RuntimeError):
    """A model produced NaN/inf scores; evaluating them would invent hits."""


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor
) -> torch.Tensor:
    """Fractional 0-based ranks of `targets` ([B], catalog indices >= 1) in `scores` [B, N+1].

    `exclude` [B, N+1] marks items not ranked (the user's history); column 0 is padding.
    """
    if not torch.isfinite(scores[:, 1:]).all():
        bad = (~torch.isfinite(scores[:, 1:])).any(1).nonzero().flatten().tolist()[:5]
        raise NonFiniteScores(
            f"non-finite scores for {len(bad)}+ users (rows {bad}); check the model"
        )
    s = scores.float().masked_fill(exclude, float("-inf"))
    s[:, 0] = float("-inf")
    target = s.gather(1, targets[:, None])
    higher = (s > target).sum(1)
    ties = (s == target).sum(1) - 1
    return higher.double() + 0.5 * ties.double()


def metrics_from_ranks(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """Recall@k, NDCG@k for each k, and MRR@10, averaged over users."""
    r = ranks.double()
    out: dict[str, float] = {"users": float(len(r))}
    if len(r) == 0:
        return out
    for k in ks:
        hit = r < k
        out[f"recall@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = (
            torch.where(hit, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r)).mean().item()
        )
    out[f"mrr@{MRR_K}"] = torch.where(r < MRR_K, 1.0 / (r + 1.0), torch.zeros_like(r)).mean().item()
    return out


def random_ndcg(num_items: int, k: int = 10) -> float:
    """Expected NDCG@k of a uniformly random ranking over `num_items` (for sanity checks)."""
    return sum(1.0 / math.log2(i + 2) for i in range(min(k, num_items))) / num_items
