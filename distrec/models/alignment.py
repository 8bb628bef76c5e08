"""Domain-adversarial alignment (model.domain_adversarial): a gradient-reversal layer and a
small domain classifier (DANN, Ganin & Lempitsky 2015). The classifier learns to tell source
from target representations; the reversed gradient trains the encoder to make them alike."""

from __future__ import annotations

import math

import torch
from torch import nn

CRITIC_HIDDEN = 64


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        """The identity (a view, so autograd records this node)."""
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        """The incoming gradient times -coefficient (none for the coefficient itself)."""
        return -ctx.coefficient * grad, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back is multiplied by -coefficient."""
    return _Reverse.apply(x, coefficient)


def reversal_strength(schedule: str, progress: float) -> float:
    """The reversal coefficient at `progress` in [0, 1] of the stage (model.domain_adversarial
    .schedule)."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return p
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class DomainCritic(nn.Module):
    """[n, d] representations -> [n] logits of "this comes from the target domain"."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, CRITIC_HIDDEN), nn.ReLU(), nn.Linear(CRITIC_HIDDEN, 1)
        )

    def forward(self, x: torch.Tensor, reversal: float) -> torch.Tensor:
        """Logits of `x` through the gradient-reversal layer (strength `reversal`)."""
        return self.net(reverse_gradient(x, reversal).to(self.net[0].weight.dtype)).squeeze(-1)
