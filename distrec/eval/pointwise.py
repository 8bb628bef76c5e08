"""Metrics for pointwise heads (rating regression, click/CTR scoring, classification).

Pure torch functions on CPU tensors; every sum is done in float64. Zero rows/users give
float('nan') rather than an exception.

Sampled-ranking layout used by `auc`, `gauc` and `logloss`: a [U, 1+k] tensor whose column 0
is each user's positive item and columns 1.. are that user's k sampled negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NAN = float("nan")


def _pair(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != true.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and true {tuple(true.shape)} differ in shape")
    return pred.reshape(-1), true.reshape(-1)


def rmse(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Root mean squared error of two 1-D tensors, in float64; nan when empty."""
    pred, true = _pair(pred, true)
    if pred.numel() == 0:
        return NAN
    return math.sqrt((pred.double() - true.double()).square().mean().item())


def mae(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean absolute error of two 1-D tensors, in float64; nan when empty."""
    pred, true = _pair(pred, true)
    if pred.numel() == 0:
        return NAN
    return (pred.double() - true.double()).abs().mean().item()


def _sampled(scores: torch.Tensor) -> bool:
    """Check the [U, 1+k] layout; True when there is anything to score (U >= 1 and k >= 1)."""
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"expected scores shaped [U, 1+k], got {tuple(scores.shape)}")
    return scores.shape[0] > 0 and scores.shape[1] > 1


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor in float64, tied values sharing their average rank."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    counts = counts.double()
    first = torch.cumsum(counts, 0) - counts  # 0-based position where each tie group starts
    return (first + (counts + 1) / 2)[inverse]


def auc(scores: torch.Tensor) -> float:
    """Global AUC of [U, 1+k] scores: all U positives (column 0) against all U*k negatives.

    The probability that a random positive outscores a random negative, ties counting 0.5,
    computed with the rank-sum (Mann-Whitney U) formula over average ranks: O(n log n).
    nan when there are no users or no negatives.
    """
    if not _sampled(scores):
        return NAN
    s = scores.double()
    n_pos, n_neg = s.shape[0], s[:, 1:].numel()
    ranks = average_ranks(torch.cat([s[:, 0], s[:, 1:].reshape(-1)]))
    u_stat = ranks[:n_pos].sum().item() - n_pos * (n_pos + 1) / 2
    return u_stat / (n_pos * n_neg)


def gauc(scores: torch.Tensor) -> float:
    """Group AUC of [U, 1+k] scores: per-user AUC averaged over users.

    A user's AUC is (negatives strictly below the positive + 0.5 * negatives tied with it) / k.
    Users are weighted by their impressions; every user here has exactly 1+k, so this is the
    plain mean over users. nan when there are no users or no negatives.
    """
    if not _sampled(scores):
        return NAN
    return user_auc(scores).mean().item()


def user_auc(scores: torch.Tensor) -> torch.Tensor:
    """[U] each user's AUC from [U, 1+k] scores (column 0 the positive): the share of their
    negatives scored strictly below it, ties counting half (float64)."""
    s = scores.double()
    pos, neg = s[:, :1], s[:, 1:]
    return ((neg < pos).double().sum(1) + 0.5 * (neg == pos).double().sum(1)) / neg.shape[1]


def logloss(logits: torch.Tensor) -> float:
    """Mean binary cross-entropy of [U, 1+k] logits, label 1 in column 0 and 0 elsewhere.

    Averaged over all U*(1+k) entries, computed stably from the logits in float64; nan when
    there are no users.
    """
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"expected logits shaped [U, 1+k], got {tuple(logits.shape)}")
    if logits.numel() == 0:
        return NAN
    x = logits.double()
    labels = torch.zeros_like(x)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(x, labels).item()


def accuracy(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of integer class predictions equal to the true class; nan when empty."""
    pred, true = _pair(pred, true)
    if pred.numel() == 0:
        return NAN
    return (pred == true).double().mean().item()


def macro_f1(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Macro-averaged F1 over the classes present in `true` or `pred`; nan when empty.

    Matches scikit-learn's f1_score(average="macro") with its default labels: each class's
    F1 = 2*tp / (2*tp + fp + fn), a class with precision + recall = 0 contributing 0.
    """
    pred, true = _pair(pred, true)
    if pred.numel() == 0:
        return NAN
    classes, inverse = torch.unique(torch.cat([pred, true]), return_inverse=True)
    p, t = inverse[: pred.numel()], inverse[pred.numel() :]
    n = classes.numel()
    tp = torch.bincount(p[p == t], minlength=n).double()
    predicted = torch.bincount(p, minlength=n).double()  # tp + fp
    actual = torch.bincount(t, minlength=n).double()  # tp + fn
    f1 = 2 * tp / (predicted + actual)  # each class appears at least once, so no 0/0
    return f1.mean().item()


def item_means(items: torch.Tensor, ratings: torch.Tensor, num_items: int) -> torch.Tensor:
    """[num_items+1] float32 mean training rating per catalog item (indices 1..num_items).

    An item with no training rating, and the padding row 0, get the global mean of `ratings`
    (all nan when `ratings` is empty). Ratings of items outside 1..num_items are an error.
    """
    items, ratings = _pair(items, ratings)
    if items.numel() and (items.min() < 1 or items.max() > num_items):
        raise ValueError(f"item indices must lie in 1..{num_items}")
    r = ratings.double()
    global_mean = r.mean().item() if r.numel() else NAN
    idx = items.long()
    sums = torch.zeros(num_items + 1, dtype=torch.float64).index_add_(0, idx, r)
    counts = torch.bincount(idx, minlength=num_items + 1).double()
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, global_mean))
    means[0] = global_mean
    return means.float()
