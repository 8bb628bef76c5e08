"""The item tower (LM features or tokens -> d) and the causal user tower over item vectors."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from distrec.models.encoder import encode_tokens


def id_table_key(domain: str) -> str:
    """Module key of a domain's ID table. Prefixed because PEFT strips `.<adapter name>`
    from saved keys, and adapters are named after domains."""
    return f"d_{domain}"


class ItemTower(nn.Module):
    """Item vector = projection(LM pooled text) [+ per-domain ID embedding].

    The LM is optional: in cached mode the pooled features come precomputed and
    `lm` is None. ID rows start at zero so a new domain is text-only until trained.
    """

    def __init__(
        self,
        feature_dim: int,
        dim: int,
        domain_items: dict[str, int],
        use_text: bool = True,
        use_ids: bool = True,
        lm: nn.Module | None = None,
        pooling: str = "mean",
        hidden: int = 512,
        id_dropout: float = 0.0,
        length_buckets: int = 1,
    ) -> None:
        super().__init__()
        self.use_text, self.use_ids, self.pooling = use_text, use_ids, pooling
        self.id_dropout = id_dropout if use_text else 0.0
        self.lm, self.length_buckets = lm, length_buckets
        # An MLP, not a single Linear: it must be able to tell apart (and remember)
        # items whose frozen LM features are close, which is what transfers.
        self.proj = (
            nn.Sequential(
                OrderedDict(
                    fc_in=nn.Linear(feature_dim, hidden),
                    act=nn.GELU(),
                    fc_out=nn.Linear(hidden, dim),
                )
            )
            if use_text
            else None
        )
        self.ids = (
            nn.ModuleDict(
                {
                    id_table_key(d): nn.Embedding(n + 1, dim, padding_idx=0)
                    for d, n in domain_items.items()
                }
            )
            if use_ids
            else None
        )
        if self.ids is not None:
            for emb in self.ids.values():
                nn.init.zeros_(emb.weight) if use_text else nn.init.normal_(emb.weight, std=0.02)

    def forward(
        self,
        domain: str,
        items: torch.Tensor,
        features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vectors for catalog indices `items` ([N]); text from `features` ([N, H]) or tokens."""
        out = None
        if self.use_text:
            if features is None:
                features = encode_tokens(
                    self.lm, input_ids, attention_mask, self.pooling, self.length_buckets
                )
            out = self.proj(features.to(self.proj.fc_in.weight.dtype))
        if self.use_ids:
            ids = self.ids[id_table_key(domain)](items)
            if self.training and self.id_dropout > 0:
                keep = torch.rand(ids.shape[0], 1, device=ids.device) >= self.id_dropout
                ids = ids * keep
            out = ids if out is None else out + ids
        return out


class CausalBlock(nn.Module):
    """Pre-norm transformer block with explicit q/k/v/o and MLP linears (LoRA targets)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.norm1(x)
        q, k, v = (
            t(h).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for t in (self.q, self.k, self.v)
        )
        # Right padding + causal mask: a real position never attends to padding,
        # and no row is fully masked (no NaN).
        att = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0
        )
        x = x + self.drop(self.o(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class UserTower(nn.Module):
    """Causal transformer over a history of item vectors -> a user vector at every position."""

    def __init__(
        self,
        dim: int,
        layers: int,
        heads: int,
        dropout: float,
        max_len: int,
        domains: list[str],
        domain_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.domains = {d: i for i, d in enumerate(domains)}
        self.domain_emb = nn.Embedding(len(domains), dim) if domain_embedding else None
        if self.domain_emb is not None:
            nn.init.zeros_(self.domain_emb.weight)
        self.blocks = nn.ModuleList(CausalBlock(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.scale = math.sqrt(dim)

    def forward(self, vectors: torch.Tensor, domain: str) -> torch.Tensor:
        n = vectors.size(1)
        x = vectors + self.pos(torch.arange(n, device=vectors.device))
        if self.domain_emb is not None:
            x = x + self.domain_emb.weight[self.domains[domain]]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
