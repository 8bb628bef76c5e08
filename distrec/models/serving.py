"""Load what `distrec export` wrote, for serving with an ANN index.

    from distrec.models.serving import load_serving
    served = load_serving("exports/ml-100k")
    items = served.item_vectors          # [N, d] rows for catalog items 1..N (ANN index)
    users = served.user_vectors([["Toy Story (1995)", "Heat (1995)"]])   # [B, d]
    top = served.recommend(["Toy Story (1995)"], k=10)                    # [(item, score)]

Scores are `scale x <user, item> + bias[item]` (the bias is the item's popularity prior, 0
without one): an inner-product ANN index over `item_vectors` ranks by the first term; add
the bias when re-ranking its candidates, as `recommend` does exactly. Only safetensors and
JSON are read: nothing is unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from distrec.config.errors import ConfigError
from distrec.config.model import UserTowerConfig
from distrec.data.collate import history_batch
from distrec.models.towers import UserTower

FILES = ("items.safetensors", "items.parquet", "user_tower.safetensors", "serving.json")


@dataclass
class Served:
    """An exported domain: its item vectors, bias and scale, item ids, and the user tower."""

    meta: dict
    vectors: torch.Tensor  # [N+1, d], row 0 = padding
    bias: torch.Tensor  # [N+1]
    scale: float
    item_ids: list[str]  # index i-1 is catalog item i
    tower: UserTower

    @property
    def item_vectors(self) -> torch.Tensor:
        """[N, d] the catalog's vectors (row i-1 = item i), what an ANN index is built from."""
        return self.vectors[1:]

    def index_of(self, items: list[str]) -> list[int]:
        """Catalog indices of item ids; an unknown id is an error naming it."""
        lookup = self._lookup()
        unknown = [i for i in items if i not in lookup]
        if unknown:
            raise KeyError(f"items not in the {self.meta['domain']} catalog: {unknown[:5]}")
        return [lookup[i] for i in items]

    def _lookup(self) -> dict[str, int]:
        if not hasattr(self, "_index"):
            self._index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        return self._index

    @torch.no_grad()
    def user_vectors(self, histories: list[list[str]]) -> torch.Tensor:
        """[B, d] user vectors after each history of item ids (oldest first)."""
        idx = [self.index_of(h) for h in histories]
        history, last = history_batch(idx, self.meta["max_history"])
        states = self.tower(self.vectors[history], self.meta["domain"])
        users = states[torch.arange(len(idx)), last]
        return F.normalize(users, dim=-1) if self.meta["cosine"] else users

    @torch.no_grad()
    def recommend(self, history: list[str], k: int = 10) -> list[tuple[str, float]]:
        """The k best items outside `history`, exactly as the run scores them."""
        user = self.user_vectors([history])[0]
        scores = self.vectors @ user * self.scale + self.bias
        scores[0] = float("-inf")
        scores[self.index_of(history)] = float("-inf")
        order = torch.sort(scores, descending=True, stable=True)
        top = [int(i) for i in order.indices[:k] if scores[int(i)] > float("-inf")]
        return [(self.item_ids[i - 1], float(scores[i])) for i in top]


def load_serving(folder: str | Path) -> Served:
    """The export in `folder` (written by `distrec export`)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise ConfigError(
            f"{folder}: not a distrec serving export (missing {missing}); write one with "
            f"`distrec export --run RUN --domain D --out {folder}`"
        )
    meta = json.loads((folder / "serving.json").read_text())
    items = load_file(str(folder / "items.safetensors"))
    tower = UserTower(
        meta["dim"],
        UserTowerConfig(**meta["user_tower"]),
        meta["max_len"],
        meta["domains"],
        dropout=0.0,
    )
    tower.load_state_dict(load_file(str(folder / "user_tower.safetensors")))
    ids = pd.read_parquet(folder / "items.parquet").sort_values("item_index")["item_id"]
    return Served(
        meta,
        items["vectors"],
        items["bias"],
        float(items["scale"].reshape(-1)[0]),
        ids.astype(str).tolist(),
        tower.eval(),
    )
