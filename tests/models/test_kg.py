"""Knowledge-graph fusion in the item tower: items that share entities come out closer than
the same texts without shared entities; an item without entities keeps its text vector."""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from distrec.config.schema import DomainConfig, KgConfig, ModelConfig
from distrec.data.kg import build_graph
from distrec.models.io import ItemBatch
from distrec.models.towers import ItemTower

FEATURES = 16


def graph_of(genres: list[str]):
    ids = [f"m{i}" for i in range(len(genres))]
    cat = pd.DataFrame({"item_id": ids, "text": ids, "field.genre": genres})
    dc = DomainConfig(name="d", format="prepared", kg_fields={"genre": "genre"})
    return build_graph({"d": (cat, dc)}, max_neighbours=4)


def tower(genres: list[str], aggregate: str = "mean", seed: int = 0) -> ItemTower:
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=32, item_id_embeddings=False, kg=KgConfig(aggregate=aggregate))
    return ItemTower(cfg, FEATURES, {"d": len(genres)}, graph=graph_of(genres)).eval()


def test_shared_entities_pull_items_together():
    # Items 1, 2 share their genres; items 3, 4 have the same two texts but disjoint genres.
    genres = ["Drama Noir", "Drama Noir", "Comedy", "Western"]
    gaps, same_text = [], []
    for seed in range(12):
        for aggregate in ("mean", "attention"):
            t = tower(genres, aggregate, seed)
            text = torch.randn(2, FEATURES, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                v = t(ItemBatch("d", torch.arange(1, 5), features=torch.cat([text, text])))
                # Every item the same text: only the entities differ.
                u = t(ItemBatch("d", torch.arange(1, 5), features=text[:1].expand(4, -1)))
            gaps.append(float(cos(v[0], v[1]) - cos(v[2], v[3])))
            same_text.append((float((u[0] - u[1]).norm()), float((u[2] - u[3]).norm())))
    assert all(shared == 0.0 < disjoint for shared, disjoint in same_text)
    # With different texts the shared entities still pull the pair together, on average
    # over initialisations and in most of them.
    assert sum(gaps) / len(gaps) > 0.02, gaps
    assert sum(g > 0 for g in gaps) >= 0.75 * len(gaps), gaps


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=0)


def test_an_item_without_entities_keeps_its_text_vector():
    t = tower(["Drama", ""])
    feats = torch.randn(2, FEATURES)
    with torch.no_grad():
        fused = t(ItemBatch("d", torch.arange(1, 3), features=feats))
        text = t.proj(feats)
    assert torch.equal(fused[1], text[1])
    assert not torch.allclose(fused[0], text[0])


def test_the_graph_is_rebuilt_from_data_not_saved():
    t = tower(["Drama", "Comedy"])
    keys = set(t.state_dict())
    assert {"kg.entities.weight", "kg.relation_maps", "kg.gate.weight"} <= keys
    assert not any(k.startswith(("kg.ent_", "kg.rel_", "kg.entity_")) for k in keys)


def test_entity_gradients_reach_only_the_items_entities():
    t = tower(["Drama", "Comedy", "Western"]).train()
    v = t(ItemBatch("d", torch.tensor([1]), features=torch.randn(1, FEATURES)))
    v.sum().backward()
    graph = graph_of(["Drama", "Comedy", "Western"])
    grad = t.kg.entities.weight.grad.abs().sum(1)
    touched = {graph.entities[i] for i in torch.nonzero(grad).flatten().tolist()}
    assert touched == {"genre=Drama"}
