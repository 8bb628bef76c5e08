"""distrec's evaluation protocol, re-stated for RecBole's venv (distrec is not installed
there): fractional ranks with half ties, history masked, and RecBole models scored under it.
A test checks ranks_from_scores against distrec.eval.metrics.ranks_from_scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from perf.peers.split_check import IdMaps

KS = (10,)


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor
) -> torch.Tensor:
    """Same rule as distrec.eval.metrics.ranks_from_scores (copied: no distrec here)."""
    if not torch.isfinite(scores[:, 1:]).all():
        raise RuntimeError("non-finite scores; check the model")
    s = scores.float().masked_fill(exclude, float("-inf"))
    s[:, 0] = float("-inf")
    target = s.gather(1, targets[:, None])
    higher = (s > target).sum(1)
    ties = (s == target).sum(1) - 1
    return higher.double() + 0.5 * ties.double()


def ndcg_at(ranks: torch.Tensor, k: int = 10) -> float:
    """Mean NDCG@k of 0-based ranks (nan for no users)."""
    r = ranks.double()
    if len(r) == 0:
        return float("nan")
    return torch.where(r < k, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r)).mean().item()


def summary_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """users, recall@k and ndcg@k for each k in KS, and mrr@10, from 0-based ranks."""
    r = ranks.double()
    out = {"users": len(r)}
    for k in KS:
        hit = r < k
        out[f"recall@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = ndcg_at(r, k)
    out["mrr@10"] = torch.where(r < 10, 1.0 / (r + 1.0), torch.zeros_like(r)).mean().item()
    return out


# ---------------------------------------------------------------- RecBole set-up
@dataclass(frozen=True)
class ModelInputs:
    """How users reach a RecBole model: its dataset's field names, the id maps between RecBole
    and distrec, and whether (with what history cap) the model reads histories."""

    dataset: Any
    ids: IdMaps
    seq: bool
    max_hist: int

    def interaction(self, chunk: list):
        """RecBole Interaction of [(user, (history, target))]: histories or user ids."""
        from recbole.data.interaction import Interaction

        ds = self.dataset
        if not self.seq:
            return Interaction(
                {ds.uid_field: torch.tensor([self.ids.rid_of_user[u] for u, _ in chunk])}
            )
        hl = [h[-self.max_hist :] for _, (h, _) in chunk]
        mat = torch.zeros(len(chunk), ds.field2seqlen[ds.item_id_list_field], dtype=torch.long)
        for r, h in enumerate(hl):
            mat[r, : len(h)] = torch.as_tensor(self.ids.rid_of_cat[h])
        return Interaction(
            {
                ds.item_id_list_field: mat,
                ds.item_list_length_field: torch.tensor([len(h) for h in hl]),
            }
        )


def score_batches(model, cases: list, inputs: ModelInputs, *, batch: int = 256) -> torch.Tensor:
    """Fractional ranks for [(user, (history, target))] under the protocol."""
    cat = inputs.ids.cat
    # catalog column of each RecBole item id column (PAD -> column 0, never ranked)
    col = torch.as_tensor(np.where(cat < 0, 0, cat))
    out = []
    model.eval()
    with torch.no_grad():
        for b in range(0, len(cases), batch):
            chunk = cases[b : b + batch]
            raw = model.full_sort_predict(inputs.interaction(chunk)).view(len(chunk), -1).double()
            out.append(chunk_ranks(raw, chunk, col, num_items=len(cat) - 1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def chunk_ranks(
    raw: torch.Tensor, chunk: list, col: torch.Tensor, *, num_items: int
) -> torch.Tensor:
    """Ranks of one chunk from RecBole's scores [B, item ids], moved to catalog columns."""
    scores = torch.zeros(len(chunk), num_items + 1, dtype=torch.float64)
    scores[:, col[1:]] = raw[:, 1:]
    exclude = torch.zeros(len(chunk), num_items + 1, dtype=torch.bool)
    for r, (_, (h, t)) in enumerate(chunk):
        exclude[r, h] = True
        exclude[r, t] = False
    targets = torch.tensor([t for _, (_, t) in chunk])
    return ranks_from_scores(scores, targets, exclude)
