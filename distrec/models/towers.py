"""Item towers (text + optional ID rows, or ID rows only) and the causal user tower.

Each tower declares the linears a PEFT adapter wraps (`lora_targets`), so adapters
never parse layer names: rename a layer here and the targets follow it.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from distrec.config.errors import ConfigError
from distrec.config.schema import ModelConfig, UserTowerConfig
from distrec.data.kg import ItemGraph
from distrec.models.encoder import default_lm_targets, encode_tokens, hidden_size
from distrec.models.io import ItemBatch
from distrec.models.kg import KgFusion
from distrec.models.packing import Packing, pack_capacity

PROJECTION_HIDDEN = 512


def id_table_key(domain: str) -> str:
    """Module key of a domain's ID table. Prefixed because PEFT strips `.<adapter name>`
    from saved keys, and adapters are named after domains."""
    return f"d_{domain}"


def id_tables(dim: int, domain_items: dict[str, int]) -> nn.ModuleDict:
    """One [N+1, dim] embedding per domain (row 0 = padding)."""
    return nn.ModuleDict(
        {id_table_key(d): nn.Embedding(n + 1, dim, padding_idx=0) for d, n in domain_items.items()}
    )


def named_linears(module: nn.Module, prefix: str, names: list[str] | None = None) -> list[str]:
    """Full names (under `prefix`) of `module`'s submodules whose last name part is in `names`
    (every nn.Linear when None)."""
    found = []
    for name, sub in module.named_modules():
        last = name.rsplit(".", 1)[-1]
        if (names is None and isinstance(sub, nn.Linear)) or (names is not None and last in names):
            found.append(f"{prefix}.{name}")
    return found


class ItemTower(nn.Module):
    """Item vector = projection(LM pooled text) [+ per-domain ID embedding].

    The LM is optional: in cached mode the pooled features come precomputed and
    `lm` is None. ID rows start at zero so a new domain is text-only until trained.
    """

    reads_text = True

    def __init__(
        self,
        cfg: ModelConfig,
        feature_dim: int,
        domain_items: dict[str, int],
        lm: nn.Module | None = None,
        graph: ItemGraph | None = None,
    ) -> None:
        super().__init__()
        self.pooling, self.length_buckets = cfg.pooling, cfg.length_buckets
        width = hidden_size(lm) if lm is not None else 0
        self.packing = Packing(cfg.packing, pack_capacity(cfg.max_text_tokens), width)
        self.id_dropout = cfg.id_dropout
        self.lm = lm
        # An MLP, not a single Linear: it must be able to tell apart (and remember)
        # items whose frozen LM features are close, which is what transfers.
        self.proj = nn.Sequential(
            OrderedDict(
                fc_in=nn.Linear(feature_dim, PROJECTION_HIDDEN),
                act=nn.GELU(),
                fc_out=nn.Linear(PROJECTION_HIDDEN, cfg.dim),
            )
        )
        self.ids = id_tables(cfg.dim, domain_items) if cfg.item_id_embeddings else None
        if self.ids is not None:
            for table in self.ids.values():
                nn.init.zeros_(table.weight)
        self.kg = None
        if cfg.kg is not None:
            if graph is None:
                raise ValueError("model.kg is set but no item graph was given to the item tower")
            self.kg = KgFusion(graph, cfg.dim, cfg.kg.aggregate)

    def content(self, batch: ItemBatch) -> torch.Tensor:
        """[N, d] what an item's text (and its knowledge-graph entities) say, without its ID
        row: all a zero-shot target item has; features [N, H] cached, else its tokens."""
        features = batch.features
        if features is None:
            features = encode_tokens(
                self.lm,
                batch.input_ids,
                batch.attention_mask,
                self.pooling,
                self.length_buckets,
                self.packing,
            )
        out = self.proj(features.to(self.proj.fc_in.weight.dtype))
        if self.kg is not None:
            out = self.kg(batch.domain, batch.items, out)
        return out

    def forward(self, batch: ItemBatch) -> torch.Tensor:
        """[N, d] vectors of `batch.items`: content (+ the domain's ID rows)."""
        out = self.content(batch)
        if self.ids is None:
            return out
        id_rows = self.ids[id_table_key(batch.domain)](batch.items)
        if self.training and self.id_dropout > 0:
            keep = torch.rand(id_rows.shape[0], 1, device=id_rows.device) >= self.id_dropout
            id_rows = id_rows * keep
        return out + id_rows

    def lora_targets(self, prefix: str, lm_names: list[str] | None = None) -> list[str]:
        """The projection's linears, plus (with `lm_names`) the LM's linears of those names.

        The LM's pooler is never a target: its output is unused (we pool ourselves), so it
        would get no gradient, which AdaLoRA's importance scores cannot take."""
        return [f"{prefix}.proj.fc_in", f"{prefix}.proj.fc_out", *self.lm_targets(prefix, lm_names)]

    def lm_targets(self, prefix: str, lm_names: list[str] | None) -> list[str]:
        """The LM's modules named `lm_names` (none without names or an LM), pooler excluded."""
        if lm_names is None or self.lm is None:
            return []
        found = named_linears(self.lm, f"{prefix}.lm", lm_names)
        return [n for n in found if not n.startswith(f"{prefix}.lm.pooler")]

    def lm_lora_names(self, configured: list[str] | None) -> list[str]:
        """The LM linear names LoRA wraps: `peft.lm_target_modules` (each the last part of a
        module name of the LM) or the architecture's."""
        if not configured:
            return default_lm_targets(self.lm)
        present = {name.rsplit(".", 1)[-1] for name, _ in self.lm.named_modules()}
        missing = [n for n in configured if n not in present]
        if missing:
            linears = sorted({n.rsplit(".", 1)[-1] for n in named_linears(self.lm, "lm")})
            raise ConfigError(
                f"peft.lm_target_modules: {missing} name no module of {type(self.lm).__name__}; "
                f"give last parts of its module names, e.g. its linears {linears[:12]}"
            )
        return list(configured)

    def domain_modules(self, domain: str, prefix: str) -> list[str]:
        """Modules a domain's adapter saves in full (its ID table), under `prefix`."""
        return [f"{prefix}.ids.{id_table_key(domain)}"] if self.ids is not None else []


class IdItemTower(nn.Module):
    """Item vector = a per-domain learned ID row (the SASRec-style baseline's item tower)."""

    reads_text = False
    lm = None

    def __init__(self, dim: int, domain_items: dict[str, int]) -> None:
        super().__init__()
        self.id_dropout = 0.0  # nothing else carries the item: hiding its row would erase it
        self.ids = id_tables(dim, domain_items)
        for table in self.ids.values():
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, batch: ItemBatch) -> torch.Tensor:
        """[N, d] ID rows of `batch.items`."""
        return self.ids[id_table_key(batch.domain)](batch.items)

    def lora_targets(self, prefix: str, lm_names: list[str] | None = None) -> list[str]:
        """No linears: an adapter on an ID-only model adapts the user tower alone."""
        return []

    def domain_modules(self, domain: str, prefix: str) -> list[str]:
        """Modules a domain's adapter saves in full (its ID table), under `prefix`."""
        return [f"{prefix}.ids.{id_table_key(domain)}"]


class CausalBlock(nn.Module):
    """Pre-norm transformer block with explicit q/k/v/o and MLP linears (LoRA targets)."""

    LINEARS = ("q", "k", "v", "o", "fc1", "fc2")

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d] -> [B, T, d]; position t attends to positions <= t."""
        batch, length, dim = x.shape
        h = self.norm1(x)
        q, k, v = (
            t(h).view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
            for t in (self.q, self.k, self.v)
        )
        # Right padding + causal mask: a real position never attends to padding,
        # and no row is fully masked (no NaN).
        att = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0
        )
        x = x + self.drop(self.o(att.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class UserTower(nn.Module):
    """Causal transformer over a history of item vectors -> a user vector at every position."""

    def __init__(
        self, dim: int, cfg: UserTowerConfig, max_len: int, domains: list[str], dropout: float
    ) -> None:
        super().__init__()
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.domains = {d: i for i, d in enumerate(domains)}
        self.domain_emb = nn.Embedding(len(domains), dim) if cfg.domain_embedding else None
        if self.domain_emb is not None:
            nn.init.zeros_(self.domain_emb.weight)
        self.blocks = nn.ModuleList(CausalBlock(dim, cfg.heads, dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.scale = math.sqrt(dim)

    def forward(self, vectors: torch.Tensor, domain: str) -> torch.Tensor:
        """[B, T, d] item vectors of histories -> [B, T, d] user state after each position."""
        length = vectors.size(1)
        # A tower whose weights a backend stored in bf16 (no autocast there) gets the fp32
        # catalog table at evaluation; as under autocast, it computes in its weights' dtype.
        vectors = vectors.to(self.pos.weight.dtype)
        x = vectors + self.pos(torch.arange(length, device=vectors.device))
        if self.domain_emb is not None:
            x = x + self.domain_emb.weight[self.domains[domain]]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def lora_targets(self, prefix: str) -> list[str]:
        """Every block's attention and MLP linears."""
        return [
            f"{prefix}.blocks.{i}.{name}"
            for i in range(len(self.blocks))
            for name in CausalBlock.LINEARS
        ]
