"""Metric names (`ndcg@10`, `recall@20`, `mrr@10`, or a head's `rmse`): the one parser every
layer uses."""

from __future__ import annotations

import re
from typing import NamedTuple

RANKING_KINDS = ("ndcg", "recall", "mrr")
METRIC_KINDS = RANKING_KINDS  # the ranking metrics every evaluation reports
_METRIC_RE = re.compile(r"^(ndcg|recall|mrr)@([0-9]+)$")
_HEAD_METRIC_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class MetricName(NamedTuple):
    """A parsed metric name; unpacks as `(kind, k)` and prints as `kind@k` (a head's metric,
    which has no cut-off, has k = 0 and prints as its name)."""

    kind: str
    k: int

    def __str__(self) -> str:
        return f"{self.kind}@{self.k}" if self.k else self.kind


MRR_K = 10  # evaluation reports MRR at this cut-off only


def reported_metrics(ks: list[int]) -> list[str]:
    """Names of the metrics every evaluation reports for cut-offs `ks` (eval.ks)."""
    return [*(f"{kind}@{k}" for k in ks for kind in ("recall", "ndcg")), f"mrr@{MRR_K}"]


def parse_metric(name: str) -> MetricName:
    """'ndcg@10' -> MetricName('ndcg', 10); 'rmse' -> MetricName('rmse', 0) (a head's metric:
    whether a head reports it is checked when the run starts). Refuses unknown ranking kinds
    and K < 1.

    Raises:
        ValueError: naming the metric and the accepted form.
    """
    if "@" not in name and _HEAD_METRIC_RE.match(name) and name not in RANKING_KINDS:
        return MetricName(name, 0)
    m = _METRIC_RE.match(name)
    if m is None or int(m.group(2)) < 1:
        raise ValueError(
            f"metric {name!r}: expected <kind>@<k> with kind in {list(RANKING_KINDS)}, or a "
            "head's metric name (e.g. rmse)"
        )
    return MetricName(m.group(1), int(m.group(2)))
