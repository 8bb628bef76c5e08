"""The joint loss of a stage's heads: sum of weight x each head's loss (distrec.heads), and
the freezing of heads a stage does not train."""

from __future__ import annotations

import torch
from torch import nn

from distrec.heads import HEADS, LossContext
from distrec.models.io import TrainOutputs


class JointLoss:
    """loss = sum over `weights` (head -> weight, model.heads) of weight x the head's loss."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = dict(weights)
        self.heads = {name: HEADS.get(name) for name in self.weights}

    def __call__(self, out: TrainOutputs, ctx: LossContext) -> torch.Tensor:
        """The weighted sum; one head alone at weight 1 is its loss unchanged."""
        total = None
        for name, head in self.heads.items():
            term = head.loss(out, ctx)
            weight = self.weights[name]
            term = term if weight == 1.0 else term * weight
            total = term if total is None else total + term
        return total


def freeze_other_heads(model: nn.Module, trained: list[str]) -> None:
    """Head modules the stage does not train take no gradient (nor weight decay), and every
    data-parallel rank agrees on which parameters are used."""
    plain = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name, module in getattr(plain, "heads", {}).items():
        if name not in trained:
            for p in module.parameters():
                p.requires_grad_(False)
