"""Beyond-accuracy metrics of top-K recommendation lists: coverage, novelty, diversity and
popularity bias, computed from every evaluated user's top-K items.

- coverage@K: distinct items recommended to anyone / catalog size;
- novelty@K: mean self-information -log2 p(i) of recommended items, p(i) the item's
  share of the domain's training interactions (+1 smoothing);
- ild@K: intra-list diversity, 1 - mean pairwise cosine of the items' cached LM features
  (cached mode; end to end no features are cached, so it is left out);
- ild_category@K: the same over multi-hot categories (e.g. genres; DomainConfig.category_field);
- arp@K: average recommended popularity (training interactions of recommended items).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ILD_CHUNK = 256  # users per similarity block


@dataclass(frozen=True)
class ItemProfile:
    """What the metrics know about a domain's items; row 0 = padding everywhere.

    counts: [N+1] training interactions; features: [N+1, H] LM item features (None: no
    feature diversity); categories: [N+1, C] multi-hot categories (None: none configured).
    """

    counts: torch.Tensor
    features: torch.Tensor | None = None
    categories: torch.Tensor | None = None

    @property
    def num_items(self) -> int:
        """N, the catalog's size."""
        return self.counts.shape[0] - 1

    def self_information(self) -> torch.Tensor:
        """[N+1] -log2 of each item's smoothed share of training interactions."""
        smoothed = self.counts.double() + 1.0
        return -torch.log2(smoothed / smoothed[1:].sum())


def top_items(scores: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] the k best-scoring items of each row of `scores` [B, N+1], never padding nor
    an `exclude`d (history) item; ties go to the lower catalog index. A user with fewer than
    k rankable items gets a shorter list, padded with 0."""
    if k <= 0:
        return torch.zeros(scores.shape[0], 0, dtype=torch.long)
    s = scores.float().masked_fill(exclude, float("-inf"))
    s[:, 0] = float("-inf")
    k = min(k, s.shape[1] - 1)
    # Ties by index (a stable descending sort's order), so lists do not depend on the kernel.
    values, top = top_with_ties(s, k)
    return top.masked_fill(values == float("-inf"), 0)


def top_with_ties(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, k] scores, [B, k] column indices) of each row's k best columns, ties to the lower
    column (what a stable descending sort of the whole row gives), from a top-k wide enough
    to hold every column tied with the k-th, not a sort of the row."""
    kth = torch.topk(s, k, dim=1).values[:, -1:]
    width = int((s >= kth).sum(1).max())
    if width >= s.shape[1]:
        ordered = torch.sort(s, dim=1, descending=True, stable=True)
        return ordered.values[:, :k], ordered.indices[:, :k]
    values, index = torch.topk(s, width, dim=1)
    return ordered_by_score_then_index(values, index, k)


def ordered_by_score_then_index(
    values: torch.Tensor, index: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k first of each row's (value, index) pairs by value descending, index ascending."""
    by_index = torch.sort(index, dim=1, stable=True)
    values = values.gather(1, by_index.indices)
    best = torch.sort(values, dim=1, descending=True, stable=True)
    return best.values[:, :k], by_index.values.gather(1, best.indices[:, :k])


def intra_list_diversity(top: torch.Tensor, vectors: torch.Tensor) -> float:
    """1 - mean pairwise cosine similarity within each list [U, K] of `vectors` [N+1, D]
    (0 entries, padding, are not items; lists with fewer than 2 items are skipped)."""
    unit = F.normalize(vectors.double(), dim=-1)
    unit[0] = 0.0
    total, lists = 0.0, 0
    for start in range(0, top.shape[0], ILD_CHUNK):  # [chunk, K, D] at a time, not [U, K, D]
        chunk = top[start : start + ILD_CHUNK]
        rows, sizes = unit[chunk], (chunk > 0).sum(1).double()
        # sum over pairs i != j of <u_i, u_j> = |sum_i u_i|^2 - sum_i |u_i|^2: O(K), not O(K^2)
        summed = rows.sum(1)
        off_diagonal = (summed * summed).sum(1) - (rows * rows).sum((1, 2))
        keep = sizes >= 2
        total += float((off_diagonal[keep] / (sizes[keep] * (sizes[keep] - 1))).sum())
        lists += int(keep.sum())
    return 1.0 - total / lists if lists else float("nan")


def beyond_accuracy(top: torch.Tensor, profile: ItemProfile, ks: list[int]) -> dict[str, float]:
    """coverage/novelty/ild/ild_category/arp @K for each K of `ks`, from top lists [U, >=K]."""
    out: dict[str, float] = {}
    if top.shape[0] == 0 or top.shape[1] < max(ks):
        return out
    info = profile.self_information()
    for k in ks:
        lists = top[:, :k]
        items = lists[lists > 0]  # a user with fewer than k rankable items has a shorter list
        out[f"coverage@{k}"] = items.unique().numel() / profile.num_items
        out[f"novelty@{k}"] = float(info[items].mean())
        out[f"arp@{k}"] = float(profile.counts.double()[items].mean())
        if profile.features is not None:
            out[f"ild@{k}"] = intra_list_diversity(lists, profile.features)
        if profile.categories is not None:
            out[f"ild_category@{k}"] = intra_list_diversity(lists, profile.categories)
    return out


def multi_hot(values: list[str]) -> torch.Tensor:
    """[N+1, C] multi-hot rows of whitespace/pipe-separated category strings (row 0 empty)."""
    split = [v.replace("|", " ").split() for v in values]
    names = sorted({c for cats in split for c in cats})
    column = {c: i for i, c in enumerate(names)}
    hot = torch.zeros(len(values) + 1, max(1, len(names)))
    for row, cats in enumerate(split, start=1):
        for c in cats:
            hot[row, column[c]] = 1.0
    return hot
