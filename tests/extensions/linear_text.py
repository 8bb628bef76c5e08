"""A toy model added as a contributor would: `model.architecture: linear_text`, one file,
one line.

Item vector = one linear map of the item's cached LM features (no MLP, no ID rows); the
user tower, scores and popularity prior are the Recommender's. It declares its own LoRA
targets, so adapters work on it unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from distrec.models.io import ItemBatch
from distrec.models.recommender import Recommender
from distrec.models.registry import MODELS, ModelSpec


class LinearItemTower(nn.Module):
    """[N, H] cached features -> [N, d] with one nn.Linear."""

    reads_text = True
    lm = None
    ids = None
    id_dropout = 0.0

    def __init__(self, feature_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(feature_dim, dim)

    def forward(self, batch: ItemBatch) -> torch.Tensor:
        return self.proj(batch.features.to(self.proj.weight.dtype))

    def lora_targets(self, prefix: str, lm_names: list[str] | None = None) -> list[str]:
        return [f"{prefix}.proj"]

    def domain_modules(self, domain: str, prefix: str) -> list[str]:
        return []  # nothing per domain: an adapter is LoRA alone


@MODELS.register("linear_text")
def linear_text(spec: ModelSpec) -> Recommender:
    """The Recommender with a linear item tower."""
    tower = LinearItemTower(spec.feature_dim, spec.cfg.dim)
    return Recommender(spec.cfg, tower, list(spec.domain_items), spec.max_len, spec.dropout)
