"""Model architectures by name (`model.architecture`): the extension point for a new model.

A builder takes a `ModelSpec` (everything a model may need, known before it is
built) and returns an nn.Module with the Recommender's named methods
(`encode_items`, `encode_users`, `train_outputs`, `score`, `lora_targets`) and an
`item_tower` that says whether it `reads_text`. Register a new one with
`@MODELS.register("name")` (README "Extending distrec").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from distrec.config.schema import ModelConfig
from distrec.data.kg import ItemGraph
from distrec.models.recommender import Recommender
from distrec.models.towers import IdItemTower, ItemTower
from distrec.utils.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """What a model is built from.

    domain_items: items per domain (ID tables, domain embeddings); feature_dim: the item
    features' width, the LM's hidden size or the generated features' (0 without item text);
    lm: the LM itself in end-to-end mode, else None; dropout: the user tower's dropout when it differs from model.user_tower.dropout;
    heads: the head modules the model runs on its (user, item) pairs (distrec.heads);
    graph: the item knowledge graph (model.kg; distrec.data.kg), else None.
    """

    cfg: ModelConfig
    domain_items: dict[str, int]
    max_len: int
    feature_dim: int = 0
    lm: nn.Module | None = None
    dropout: float | None = None
    heads: dict[str, nn.Module] = field(default_factory=dict)
    graph: ItemGraph | None = None


ModelBuilder = Callable[[ModelSpec], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model architecture", "model.architecture")


@MODELS.register("two_tower")
def two_tower(spec: ModelSpec) -> Recommender:
    """Item = projected LM text (+ gated knowledge-graph entities, `model.kg`) (+ a per-domain
    ID row, `model.item_id_embeddings`)."""
    tower = ItemTower(spec.cfg, spec.feature_dim, spec.domain_items, spec.lm, spec.graph)
    return Recommender(
        spec.cfg, tower, list(spec.domain_items), spec.max_len, spec.dropout, spec.heads
    )


@MODELS.register("id_only")
def id_only(spec: ModelSpec) -> Recommender:
    """Item = a learned ID row only: the SASRec-style target-only baseline."""
    tower = IdItemTower(spec.cfg.dim, spec.domain_items)
    return Recommender(
        spec.cfg, tower, list(spec.domain_items), spec.max_len, spec.dropout, spec.heads
    )


def build_model(name: str, spec: ModelSpec) -> nn.Module:
    """The `name`d architecture built from `spec` (ConfigError listing the known ones)."""
    return MODELS.get(name)(spec)
