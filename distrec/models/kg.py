"""Knowledge-graph fusion into the item tower (model.kg): one relation-aware aggregation of
an item's entity embeddings (an R-GCN layer: each relation its own linear map, a mean per
relation; or attention from the item's text vector), added to the text vector through a
learned gate. The graph itself is built from the data (distrec.data.kg)."""

from __future__ import annotations

import math

import torch
from torch import nn

from distrec.data.kg import ItemGraph


class KgFusion(nn.Module):
    """item content = text + gate([text, kg]) * kg, where kg pools the item's entities.

    The neighbour lists are buffers built from the data (not saved: the same data rebuilds
    them), so checkpoints hold only the entity embeddings, relation maps and gate.
    """

    def __init__(self, graph: ItemGraph, dim: int, aggregate: str) -> None:
        super().__init__()
        self.aggregate = aggregate
        self.entities = nn.Embedding(len(graph.entities), dim, padding_idx=0)
        nn.init.normal_(self.entities.weight, std=1.0 / math.sqrt(dim))
        with torch.no_grad():
            self.entities.weight[0].zero_()
        # One [d, d] map per relation (R-GCN's W_r), starting at the identity.
        self.relation_maps = nn.Parameter(torch.eye(dim).repeat(len(graph.relations), 1, 1))
        self.gate = nn.Linear(2 * dim, dim)
        self.query = nn.Linear(dim, dim) if aggregate == "attention" else None
        self.register_buffer("entity_relation", graph.entity_relation.clone(), persistent=False)
        self.register_buffer("entity_ids", torch.arange(len(graph.entities)), persistent=False)
        for domain, (ent, rel) in graph.neighbours.items():
            self.register_buffer(f"ent_{domain}", ent.clone(), persistent=False)
            self.register_buffer(f"rel_{domain}", rel.clone(), persistent=False)

    def entity_messages(self) -> torch.Tensor:
        """[E+1, d] every entity's embedding through its relation's map."""
        # Through the embedding's forward (not .weight): a sharded backend (ZeRO-3) gathers a
        # module's parameters when it is called.
        table = self.entities(self.entity_ids)
        maps = self.relation_maps.to(table.dtype)
        parts = [(self.entity_relation == r, table @ maps[r]) for r in range(1, maps.shape[0])]
        # Under autocast the products come out in the compute dtype, not the table's.
        out = parts[0][1].new_zeros(table.shape)
        for rows, mapped in parts:
            out[rows] = mapped[rows]
        return out

    def pooled(self, domain: str, items: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[N, d] the entity vector of `items` (zeros for an item without entities)."""
        ent = getattr(self, f"ent_{domain}")[items]
        rel = getattr(self, f"rel_{domain}")[items]
        messages = self.entity_messages()[ent]  # [N, M, d]
        real = ent > 0
        if self.query is None:
            # Mean within each relation, summed over relations (R-GCN's 1/c_{i,r}).
            same = (rel[:, :, None] == rel[:, None, :]) & real[:, None, :]
            weight = real.to(messages.dtype) / same.sum(-1).clamp(min=1).to(messages.dtype)
        else:
            logits = (messages @ self.query(text)[:, :, None]).squeeze(-1)
            logits = logits / math.sqrt(text.shape[-1])
            weight = logits.masked_fill(~real, float("-inf")).softmax(-1).nan_to_num(0.0)
        return (weight[:, :, None] * messages).sum(1)

    def forward(self, domain: str, items: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[N, d] text vectors of `items` with their gated entity vector added."""
        kg = self.pooled(domain, items, text).to(text.dtype)
        gate = torch.sigmoid(self.gate(torch.cat([text, kg], -1)))
        return text + gate * kg
