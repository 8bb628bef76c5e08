"""The two-tower cross-domain recommender: one module, two execution modes.

`forward(task=...)` is the only entry so that every wrapper (DDP, DeepSpeed,
FSDP) sees the computation: `train` returns user vectors at every real position
plus the candidate item vectors, `catalog` returns item vectors, `users` returns
the user vector after each history's last item. Losses live in distrec.train.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from distrec.config.schema import ModelConfig
from distrec.models.towers import ItemTower, UserTower

MAX_LOGIT_SCALE = 100.0  # a learned 1/temperature is capped here (as CLIP does)


class Recommender(nn.Module):
    """Score = <user, item> x scale + item bias, where scale = 1/temperature (fixed or
    learned) and, with `model.score: cosine`, both towers' outputs are L2-normalised."""

    def __init__(
        self,
        cfg: ModelConfig,
        feature_dim: int,
        domain_items: dict[str, int],
        max_len: int,
        lm: nn.Module | None = None,
        use_text: bool = True,
        use_ids: bool | None = None,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        ut = cfg.user_tower
        self.item_tower = ItemTower(
            feature_dim,
            cfg.dim,
            domain_items,
            use_text=use_text,
            use_ids=cfg.item_id_embeddings if use_ids is None else use_ids,
            lm=lm,
            pooling=cfg.pooling,
            id_dropout=cfg.id_dropout,
            length_buckets=cfg.length_buckets,
        )
        self.user_tower = UserTower(
            cfg.dim,
            ut.layers,
            ut.heads,
            ut.dropout if dropout is None else dropout,
            max_len,
            sorted(domain_items),
            ut.domain_embedding,
        )
        self.rating_head = (
            nn.Sequential(nn.Linear(2 * cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, 1))
            if cfg.head == "rating"
            else None
        )
        # Starts as a full log-popularity prior, so the towers learn taste beyond popularity
        # (which does not transfer) while popularity comes from each domain's own counts.
        # Shape [1], not a scalar: DeepSpeed broadcasts parameters as byte views, which
        # a 0-dim tensor cannot give.
        self.pop_weight = nn.Parameter(torch.ones(1)) if cfg.popularity_prior else None
        self.cosine = cfg.score == "cosine"
        # Shape [1] for the same DeepSpeed reason as pop_weight.
        self.log_scale = (
            nn.Parameter(torch.full((1,), math.log(1.0 / cfg.temperature)))
            if cfg.learn_temperature
            else None
        )
        self.fixed_scale = 1.0 / cfg.temperature
        # DeepSpeed derives its "auto" ZeRO-3 bucket sizes from model.config.hidden_size.
        self.config = lm.config if lm is not None else PretrainedConfig(hidden_size=cfg.dim)

    def forward(self, task: str, domain: str, **kw) -> dict[str, torch.Tensor]:
        if task == "train":
            return self._train(domain, **kw)
        if task == "catalog":
            popularity = kw.pop("popularity", None)
            items = self._unit(self.item_tower(domain, **kw))
            return {"items": items, "bias": self._bias(popularity, items), "scale": self.scale()}
        if task == "users":
            return {"users": self._users(domain, **kw)}
        raise ValueError(f"unknown task {task!r}")

    def _train(
        self,
        domain: str,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        valid: torch.Tensor,
        items: torch.Tensor,
        features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        popularity: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`items` are the candidate catalog indices (whole catalog, or a batch's unique items);
        `inputs`/`targets` index into [pad] + items, i.e. 0 is padding."""
        cand = self._unit(
            self.item_tower(
                domain, items, features=features, input_ids=input_ids, attention_mask=attention_mask
            )
        )
        table = torch.cat([cand.new_zeros(1, cand.size(1)), cand])
        users = self._unit(self.user_tower(table[inputs], domain))
        real = (targets > 0) & valid[:, None]
        out = {
            "users": users[real],
            "targets": targets[real] - 1,
            "candidates": cand,
            "candidate_items": items,
            "bias": self._bias(popularity, cand),
            "scale": self.scale(),
        }
        if self.rating_head is not None:
            out["rating"] = self.rating(out["users"], cand[out["targets"]])
        return out

    def _users(
        self, domain: str, history: torch.Tensor, last: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:
        """User vectors after each history; `table` = catalog vectors with a pad row 0."""
        states = self._unit(self.user_tower(table[history], domain))
        return states[torch.arange(history.size(0), device=history.device), last]

    def _unit(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors, dim=-1) if self.cosine else vectors

    def scale(self) -> torch.Tensor:
        """1/temperature as a [1] tensor (a parameter when the temperature is learned)."""
        if self.log_scale is None:
            return torch.full((1,), self.fixed_scale, device=self.user_tower.pos.weight.device)
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def _bias(self, popularity: torch.Tensor | None, items: torch.Tensor) -> torch.Tensor:
        """Per-item score offset: learned weight x the item's standardised log popularity."""
        if self.pop_weight is None or popularity is None:
            return items.new_zeros(items.shape[0])
        return self.pop_weight * popularity.to(items.dtype)

    def rating(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.rating_head(torch.cat([users, items], -1)).squeeze(-1)
