"""The item knowledge graph: entities from catalog fields shared across domains, triples
files validated with file:line errors."""

from __future__ import annotations

import pandas as pd
import pytest

from distrec.config import ConfigError
from distrec.config.schema import DomainConfig
from distrec.data.kg import build_graph
from distrec.data.table import DataError


def catalog(genres: list[str], years: list[str]) -> pd.DataFrame:
    ids = [f"m{i}" for i in range(len(genres))]
    return pd.DataFrame(
        {
            "item_index": range(1, len(ids) + 1),
            "item_id": ids,
            "text": ids,
            "field.genre": genres,
            "field.year": years,
        }
    )


def domain(name: str, **kg) -> DomainConfig:
    return DomainConfig(name=name, format="prepared", **kg)


def entity_names(graph, name: str, item: int) -> set[str]:
    ent = graph.neighbours[name][0][item]
    return {graph.entities[e] for e in ent.tolist() if e}


def test_field_values_become_entities_shared_across_domains():
    a = catalog(["Comedy Drama", "Action"], ["1990", "1995"])
    b = catalog(["Drama|Action"], ["1990"]).rename(columns={"field.genre": "field.class"})
    graph = build_graph(
        {
            "a": (a, domain("a", kg_fields={"genre": "genre", "year": "year"})),
            "b": (b, domain("b", kg_fields={"genre": "class", "year": "year"})),
        },
        max_neighbours=8,
    )
    assert graph.relations == ["<pad>", "genre", "year"]
    assert entity_names(graph, "a", 1) == {"genre=Comedy", "genre=Drama", "year=1990"}
    assert entity_names(graph, "b", 1) == {"genre=Drama", "genre=Action", "year=1990"}
    # One entity per (relation, value), whichever domain names it.
    assert len(graph.entities) == 1 + 3 + 2
    ent, rel = graph.neighbours["a"]
    assert ent[0].eq(0).all()  # the padding item has no edge
    for e, r in zip(ent[1].tolist(), rel[1].tolist(), strict=True):
        if e:
            assert graph.relations[r] == graph.entities[e].split("=")[0]
    assert graph.entity_relation[0] == 0


def test_vocabulary_does_not_depend_on_domain_order_and_neighbours_are_capped():
    a, b = catalog(["A B C D"], ["1"]), catalog(["D E"], ["2"])
    fields = {"genre": "genre", "year": "year"}
    one = build_graph(
        {"a": (a, domain("a", kg_fields=fields)), "b": (b, domain("b", kg_fields=fields))}, 3
    )
    two = build_graph(
        {"b": (b, domain("b", kg_fields=fields)), "a": (a, domain("a", kg_fields=fields))}, 3
    )
    assert one.entities == two.entities
    assert one.neighbours["a"][0].shape == (2, 3)
    assert (one.neighbours["a"][0][1] > 0).sum() == 3


def test_a_missing_field_names_the_catalogs_fields():
    with pytest.raises(ConfigError, match=r"kg_fields\['genre'\]='genres'.*\['genre', 'year'\]"):
        build_graph({"a": (catalog(["A"], ["1"]), domain("a", kg_fields={"genre": "genres"}))}, 4)


def test_no_edges_is_refused():
    empty = catalog([""], [""])
    with pytest.raises(ConfigError, match="no edges"):
        build_graph({"a": (empty, domain("a", kg_fields={"genre": "genre"}))}, 4)


def test_triples_add_edges(tmp_path):
    path = tmp_path / "kg.csv"
    path.write_text("head,relation,tail\nm0,director,Lynch\nm1,director,Lynch\n")
    graph = build_graph(
        {"a": (catalog(["A", "B"], ["1", "2"]), domain("a", kg_triples=str(path)))}, 4
    )
    assert entity_names(graph, "a", 1) == entity_names(graph, "a", 2) == {"director=Lynch"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "m0,director,Lynch\nm9,director,Lynch\n",
            r"kg.csv:3: head 'm9' is not an item of domain 'a'",
        ),
        ("m0,,Lynch\n", r"kg.csv:2: empty relation"),
        ("m0,director,\n", r"kg.csv:2: empty tail"),
    ],
)
def test_bad_triples_name_file_and_line(tmp_path, rows, message):
    path = tmp_path / "kg.csv"
    path.write_text("head,relation,tail\n" + rows)
    with pytest.raises(DataError, match=message):
        build_graph({"a": (catalog(["A"], ["1"]), domain("a", kg_triples=str(path)))}, 4)


def test_parquet_triples_report_row_numbers_and_missing_columns(tmp_path):
    path = tmp_path / "kg.parquet"
    pd.DataFrame({"head": ["m0", "zz"], "relation": ["r", "r"], "tail": ["t", "t"]}).to_parquet(
        path
    )
    with pytest.raises(DataError, match=r"kg.parquet:2: head 'zz'"):
        build_graph({"a": (catalog(["A"], ["1"]), domain("a", kg_triples=str(path)))}, 4)
    bad = tmp_path / "bad.csv"
    bad.write_text("item,relation,tail\nm0,r,t\n")
    with pytest.raises(DataError, match=r"missing column 'head'"):
        build_graph({"a": (catalog(["A"], ["1"]), domain("a", kg_triples=str(bad)))}, 4)
    txt = tmp_path / "kg.txt"
    txt.write_text("x")
    with pytest.raises(ConfigError, match=r"\.csv or \.parquet"):
        build_graph({"a": (catalog(["A"], ["1"]), domain("a", kg_triples=str(txt)))}, 4)
