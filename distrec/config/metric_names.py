"""Metric names (`ndcg@10`, `recall@20`, `mrr@10`): the one parser every layer uses."""

from __future__ import annotations

import re
from typing import NamedTuple

METRIC_KINDS = ("ndcg", "recall", "mrr")
_METRIC_RE = re.compile(r"^(ndcg|recall|mrr)@([0-9]+)$")


class MetricName(NamedTuple):
    """A parsed metric name; unpacks as `(kind, k)` and prints as `kind@k`."""

    kind: str
    k: int

    def __str__(self) -> str:
        return f"{self.kind}@{self.k}"


MRR_K = 10  # evaluation reports MRR at this cut-off only


def reported_metrics(ks: list[int]) -> list[str]:
    """Names of the metrics every evaluation reports for cut-offs `ks` (eval.ks)."""
    return [*(f"{kind}@{k}" for k in ks for kind in ("recall", "ndcg")), f"mrr@{MRR_K}"]


def parse_metric(name: str) -> MetricName:
    """'ndcg@10' -> MetricName('ndcg', 10); refuses unknown kinds and K < 1.

    Raises:
        ValueError: naming the metric and the accepted form.
    """
    m = _METRIC_RE.match(name)
    if m is None or int(m.group(2)) < 1:
        raise ValueError(f"metric {name!r}: expected <kind>@<k> with kind in {list(METRIC_KINDS)}")
    return MetricName(m.group(1), int(m.group(2)))
