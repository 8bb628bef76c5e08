"""The two-tower cross-domain recommender over typed requests (distrec.models.io).

Named methods do the work: `encode_items`, `encode_users`, `train_outputs`, `judge_pairs`
and `score`. `forward` only dispatches on the request's type, because every wrapper
(DDP, DeepSpeed, FSDP, PEFT, Accelerate's autocast) hooks `forward`: whatever runs
under a wrapper must enter through it. Losses live in distrec.train.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from distrec.config.schema import ModelConfig
from distrec.models.alignment import DomainCritic
from distrec.models.io import (
    AlignBatch,
    DomainLogits,
    ItemBatch,
    ItemVectors,
    PairInputs,
    PairOutputs,
    PairQuery,
    RatingTotals,
    TrainBatch,
    TrainOutputs,
    UserQuery,
)
from distrec.models.towers import UserTower

MAX_LOGIT_SCALE = 100.0  # a learned 1/temperature is capped here (as CLIP does)


class Recommender(nn.Module):
    """Score = <user, item> x scale + item bias, where scale = 1/temperature (fixed or
    learned) and, with `model.score: cosine`, both towers' outputs are L2-normalised.

    The item tower is given (text + ID rows, or ID rows only: distrec.models.registry);
    the user tower, score and popularity prior are the same for every item tower. `heads`:
    the head modules (distrec.heads) run on every (user state, item) pair in `forward`.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        item_tower: nn.Module,
        domains: list[str],
        max_len: int,
        dropout: float | None = None,
        heads: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.item_tower = item_tower
        self.user_tower = UserTower(
            cfg.dim,
            cfg.user_tower,
            max_len,
            sorted(domains),
            cfg.user_tower.dropout if dropout is None else dropout,
        )
        self.heads = nn.ModuleDict(heads or {})
        # Pretraining-only (model.domain_adversarial): attached before and removed after the
        # stage, so exported bases never carry it.
        self.critic: DomainCritic | None = None
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
        lm = item_tower.lm
        # DeepSpeed derives its "auto" ZeRO-3 bucket sizes from model.config.hidden_size.
        self.config = lm.config if lm is not None else PretrainedConfig(hidden_size=cfg.dim)

    def forward(self, request: TrainBatch | ItemBatch | UserQuery | PairQuery | AlignBatch):
        """Dispatch a typed request to its method (see the module docstring for why)."""
        if isinstance(request, TrainBatch):
            return self.train_outputs(request)
        if isinstance(request, ItemBatch):
            return self.encode_items(request)
        if isinstance(request, UserQuery):
            return self.encode_users(request)
        if isinstance(request, PairQuery):
            return self.judge_pairs(request)
        if isinstance(request, AlignBatch):
            return self.domain_logits(request)
        raise TypeError(f"unknown request {type(request).__name__}; see distrec.models.io")

    def encode_items(self, batch: ItemBatch) -> ItemVectors:
        """Vectors [N, d], bias [N] and scale [1] of `batch.items`."""
        vectors = self._unit(self.item_tower(batch))
        return ItemVectors(vectors, self._bias(batch.popularity, vectors), self.scale())

    def train_outputs(self, batch: TrainBatch) -> TrainOutputs:
        """User vectors at every real position and the candidates they are scored against."""
        cand = self.encode_items(batch.candidates)
        table = torch.cat([cand.vectors.new_zeros(1, cand.vectors.size(1)), cand.vectors])
        users = self._unit(self.user_tower(table[batch.inputs], batch.domain))
        real = batch.real_positions()
        users, targets = users[real], batch.targets[real] - 1
        heads = {}
        if len(self.heads):
            mean, count = history_stats(batch.input_ratings, batch.inputs)
            item_mean, item_count = item_stats(batch, targets, real)
            # index_select: its backward is deterministic on CPU (advanced indexing's is not)
            items = cand.vectors.index_select(0, targets)
            pair = PairInputs(users, items, mean[real], count[real], item_mean, item_count)
            heads = {name: module(pair) for name, module in self.heads.items()}
        domain = self.domain_logits(batch.align) if batch.align is not None else None
        return TrainOutputs(
            users,
            targets,
            cand.vectors,
            batch.candidates.items,
            cand.bias,
            cand.scale,
            heads,
            domain,
        )

    def aligned_representations(self, align: AlignBatch) -> dict[str, torch.Tensor]:
        """Per domain of `align`: the item tower's unit content vectors (no ID rows: what a
        zero-shot target item has) or, `on: user`, the user states after its histories."""
        reps = {}
        for name, items in align.items.items():
            content = self._unit(self.item_tower.content(items))
            if align.on == "user":
                table = torch.cat([content.new_zeros(1, content.shape[1]), content])
                history = align.histories[name]
                last = torch.full((history.shape[0],), history.shape[1] - 1, device=history.device)
                content = self.encode_users(UserQuery(name, history, last, table))
            reps[name] = content
        return reps

    def domain_logits(self, align: AlignBatch) -> DomainLogits:
        """The domain critic's logits over `align`'s representations, through the reversal."""
        if self.critic is None:
            raise ValueError("an AlignBatch needs the domain critic (attach_critic) on the model")
        reps = self.aligned_representations(align)
        names = list(reps)
        logits = self.critic(torch.cat([reps[n] for n in names]), align.reversal)
        labels = torch.cat(
            [torch.full((reps[n].shape[0],), float(n == align.target)) for n in names]
        ).to(logits.device)
        return DomainLogits(logits, labels)

    def judge_pairs(self, query: PairQuery) -> PairOutputs:
        """Scores of each history's `items` [B, m] and the head modules' outputs for its
        held-out item (column 0), after the history's newest item."""
        catalog = query.catalog
        users = self.encode_users(
            UserQuery(query.domain, query.history, query.last, catalog.vectors)
        )
        with torch.autocast(device_type=users.device.type, enabled=False):
            vectors = catalog.vectors[query.items].float()
            scale = float(catalog.scale.float().reshape(-1)[0])
            scores = (users.float()[:, None, :] * vectors).sum(-1) * scale
            scores = scores + catalog.bias[query.items].float()
        rows = torch.arange(query.history.size(0), device=query.history.device)
        mean, count = history_stats(query.history_ratings, query.history)
        item_mean, item_count = totals_mean(query.item_ratings, rows)
        pair = PairInputs(
            users,
            catalog.vectors[query.items[:, 0]],
            mean[rows, query.last],
            count[rows, query.last],
            item_mean,
            item_count,
            scores,
        )
        return PairOutputs(scores, {name: module(pair) for name, module in self.heads.items()})

    def user_states(self, vectors: torch.Tensor, domain: str) -> torch.Tensor:
        """[B, T, d] (unit, under cosine) user vectors after every position of histories of
        item vectors [B, T, d]."""
        return self._unit(self.user_tower(vectors, domain))

    def encode_users(self, query: UserQuery) -> torch.Tensor:
        """[B, d] user vectors after each history's newest item."""
        states = self.user_states(query.table[query.history], query.domain)
        return states[torch.arange(query.history.size(0), device=query.history.device), query.last]

    @staticmethod
    def score(users: torch.Tensor, items: ItemVectors) -> torch.Tensor:
        """[B, N] scores of users [B, d] against `items`, in fp32 even inside an autocast
        region: bf16 scores would round near-equal items into ties and change ranks."""
        with torch.autocast(device_type=users.device.type, enabled=False):
            scale = float(items.scale.float().reshape(-1)[0])
            return users.float() @ items.vectors.float().T * scale + items.bias.float()

    def lora_targets(self, lm_names: list[str] | None = None) -> list[str]:
        """Module names a PEFT adapter wraps: the item tower's (LM linears named `lm_names`
        only when given) and every user-tower linear."""
        return [
            *self.item_tower.lora_targets("item_tower", lm_names),
            *self.user_tower.lora_targets("user_tower"),
        ]

    def lm_lora_targets(self, lm_names: list[str]) -> list[str]:
        """The item tower's LM linears named `lm_names` alone (end-to-end source training)."""
        return self.item_tower.lm_targets("item_tower", lm_names)

    def domain_modules(self, domain: str) -> list[str]:
        """Modules trained in full (not through LoRA) by `domain`'s adapter: its ID table and
        the head modules (each domain gets its own copy)."""
        return [
            *self.item_tower.domain_modules(domain, "item_tower"),
            *(f"heads.{name}" for name in self.heads),
        ]

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


def history_stats(
    ratings: torch.Tensor | None, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] mean and count of the ratings of `items`' real (non-padding) entries up to and
    including each position; zeros without ratings."""
    real = (items > 0).float()
    if ratings is None:
        return torch.zeros_like(real), torch.zeros_like(real)
    count = real.cumsum(1)
    total = (ratings.to(real.dtype) * real).cumsum(1)
    return total / count.clamp(min=1.0), count


def item_stats(
    batch: TrainBatch, targets: torch.Tensor, real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """[P] mean and count of each real position's target item's training ratings, without
    the rating being predicted (it is one of them: a head must not read its own label)."""
    if batch.item_ratings is None or batch.ratings is None:
        return totals_mean(None, targets)
    own = batch.ratings[real].to(batch.item_ratings.sum.dtype)
    total = batch.item_ratings.sum[targets] - own
    count = (batch.item_ratings.count[targets] - 1).clamp(min=0)
    return totals_mean(RatingTotals(total, count), targets)


def totals_mean(
    totals: RatingTotals | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, count) [n] of rating totals (0 where there are none, or without totals)."""
    if totals is None:
        zeros = torch.zeros(like.shape[0], device=like.device)
        return zeros, zeros
    count = totals.count.float()
    return totals.sum.float() / count.clamp(min=1.0), count
