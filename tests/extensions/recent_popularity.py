"""A toy stage added as a contributor would: recent popularity (`stages.extra:
[recent_popularity]`), one file, one line.

Ranks the target's items by how often they appear among the last 5 training items of
every user (a recency-aware popularity baseline), under the same protocol and split
as every other stage, and stores its record and per-user ranks like them.
"""

from __future__ import annotations

import torch

from distrec.eval.evaluate import UserRanks, eval_cases, rank_sharded
from distrec.train.stages.pipeline import Pipeline
from distrec.train.stages.registry import register_stage

RECENT = 5


@register_stage("recent_popularity")
def recent_popularity(pipe: Pipeline) -> None:
    """Counts over each user's last RECENT training items (valid and test items excluded)."""
    ws, target = pipe.ws, pipe.ws.cfg.data.target
    d = ws.domains[target]
    counts = torch.zeros(d.num_items + 1)
    for seq in d.sequences():
        for item in seq["items"][:-2][-RECENT:]:
            counts[item] += 1

    def ranks(name: str, split: str) -> UserRanks:
        cases = eval_cases(d.sequences(), split, ws.cfg.eval.max_users)
        score = lambda history, last: counts.expand(history.shape[0], -1)  # noqa: E731
        return rank_sharded(cases, score, pipe.evaluator.ranking(d, lists=True), ws.shard())

    pipe.results["recent_popularity"] = pipe.ranked_record("recent_popularity", [target], ranks)
