"""A toy head added as a contributor would: BPR (`model.heads: {bpr: 1.0}`), one file, one
registration line.

Bayesian personalised ranking: for every real position, the next item should outscore
one uniformly drawn item; loss = -log sigmoid(s_pos - s_neg).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distrec.heads import HEADS, Head, LossContext
from distrec.models.io import TrainOutputs


def bpr(out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
    """Mean -log sigmoid(positive score - sampled negative score) over real positions."""
    if out.users.shape[0] == 0:  # keeps ranks in step without moving weights
        return out.candidates.sum() * 0.0 + out.users.sum() * 0.0
    draws = torch.randint(0, out.candidates.shape[0], out.targets.shape, generator=ctx.generator)
    negatives = draws.to(out.targets.device)

    def score(items: torch.Tensor) -> torch.Tensor:
        return (out.users * out.candidates[items]).sum(-1) * out.scale + out.bias[items]

    return -F.logsigmoid((score(out.targets) - score(negatives)).float()).mean()


HEADS.add("bpr", Head(loss=bpr))
