"""The item knowledge graph (model.kg): item -> relation -> entity edges, from catalog
fields (`data.domains[].kg_fields`) and triples files (`kg_triples`), over one entity
vocabulary shared by every domain.

An entity is named `relation=value`: the genre `Comedy` of ML-1M and of ML-100K is one
entity (one embedding), which is how the graph carries knowledge across domains that
share no item IDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from distrec.config.errors import ConfigError
from distrec.config.schema import DomainConfig
from distrec.data.importers import BadRows, DataError, read_table

TRIPLE_COLUMNS = ("head", "relation", "tail")
TRIPLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class ItemGraph:
    """relations: relation names (index r; 0 = padding); entities: `relation=value` names
    (index e; 0 = padding); entity_relation: [E+1] each entity's relation index;
    neighbours: domain -> (entities [N+1, M], relations [N+1, M]) of each item (0 = no edge;
    row 0 = the padding item)."""

    relations: list[str]
    entities: list[str]
    entity_relation: torch.Tensor
    neighbours: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def edges(self, domain: str) -> int:
        """Item -> entity edges of `domain`."""
        return int((self.neighbours[domain][0] > 0).sum())


def field_values(value: object) -> list[str]:
    """A catalog field's entities: its whitespace- or |-separated values (as category_field)."""
    return str(value).replace("|", " ").split() if pd.notna(value) else []


def field_edges(catalog: pd.DataFrame, kg_fields: dict[str, str], domain: str) -> list[list]:
    """Per catalog item (in item order): its (relation, value) edges from `kg_fields`."""
    fields = [c.removeprefix("field.") for c in catalog.columns if c.startswith("field.")]
    edges: list[list] = [[] for _ in range(len(catalog))]
    for relation, name in sorted(kg_fields.items()):
        if f"field.{name}" not in catalog.columns:
            raise ConfigError(
                f"domain {domain!r}: kg_fields[{relation!r}]={name!r} is not an item field of its "
                f"catalog; its fields are {fields}"
            )
        for row, value in enumerate(catalog[f"field.{name}"].tolist()):
            edges[row].extend((relation, v) for v in field_values(value))
    return edges


def triple_edges(path: str, catalog: pd.DataFrame, domain: str) -> list[list]:
    """Per catalog item: its (relation, tail) edges from a `head,relation,tail` file; a bad
    row (unknown item, empty relation or tail) is a DataError naming file:line."""
    file = Path(path)
    fmt = TRIPLE_FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"domain {domain!r}: kg_triples={path!r} must be a .csv or .parquet file "
            f"of {','.join(TRIPLE_COLUMNS)} rows"
        )
    if not file.exists():
        raise ConfigError(f"domain {domain!r}: kg_triples={path!r} does not exist")
    table = read_table(file, fmt, BadRows("fail"))
    cols = [table.column(c, f"knowledge-graph {c}") for c in TRIPLE_COLUMNS]
    row_of = {str(item): row for row, item in enumerate(catalog["item_id"].tolist())}
    edges: list[list] = [[] for _ in range(len(catalog))]
    for values, line in zip(table.rows, table.lines, strict=True):
        head, relation, tail = (values[c].strip() for c in cols)
        where = f"{file}:{line}"
        if head not in row_of:
            raise DataError(
                f"{where}: head {head!r} is not an item of domain {domain!r}; heads are item ids "
                f"of its item table (e.g. {next(iter(row_of), '')!r})"
            )
        for name, value in (("relation", relation), ("tail", tail)):
            if not value:
                raise DataError(f"{where}: empty {name}; every row needs head, relation and tail")
        edges[row_of[head]].append((relation, tail))
    return edges


def domain_edges(catalog: pd.DataFrame, domain: DomainConfig) -> list[list]:
    """Per catalog item: its edges from the domain's kg_fields, then its kg_triples."""
    edges = field_edges(catalog, domain.kg_fields, domain.name)
    if domain.kg_triples is not None:
        for row, extra in enumerate(triple_edges(domain.kg_triples, catalog, domain.name)):
            edges[row].extend(extra)
    return edges


def build_graph(
    catalogs: dict[str, tuple[pd.DataFrame, DomainConfig]], max_neighbours: int
) -> ItemGraph:
    """One graph over every domain's catalog: sorted relation and entity vocabularies (the
    same whatever the domains' order), each item's first `max_neighbours` distinct edges."""
    per_domain = {name: domain_edges(cat, dc) for name, (cat, dc) in catalogs.items()}
    pairs = {pair for edges in per_domain.values() for item in edges for pair in item}
    if not pairs:
        raise ConfigError(
            "model.kg is set but the graph has no edges: give data.domains[].kg_fields "
            "(relation -> item field) or kg_triples"
        )
    relations = ["<pad>", *sorted({r for r, _ in pairs})]
    rel_index = {r: i for i, r in enumerate(relations)}
    ordered = sorted(pairs)
    ent_index = {pair: i for i, pair in enumerate(ordered, start=1)}
    entities = ["<pad>", *(f"{r}={v}" for r, v in ordered)]
    entity_relation = torch.tensor([0] + [rel_index[r] for r, _ in ordered])
    neighbours = {}
    for name, edges in per_domain.items():
        ent = torch.zeros(len(edges) + 1, max_neighbours, dtype=torch.long)
        rel = torch.zeros_like(ent)
        for row, item in enumerate(edges, start=1):
            kept = list(dict.fromkeys(item))[:max_neighbours]
            for col, (r, v) in enumerate(kept):
                ent[row, col], rel[row, col] = ent_index[r, v], rel_index[r]
        neighbours[name] = (ent, rel)
    return ItemGraph(relations, entities, entity_relation, neighbours)
