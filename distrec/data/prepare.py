"""`distrec data prepare`: import a domain, split it leave-one-out and write shards."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distrec.config import ConfigError, DomainConfig, RunConfig
from distrec.data import fetch  # noqa: F401  (registers the embedded datasets)
from distrec.data.formats import EMBEDDED_DATASETS, FORMATS
from distrec.data.importers import (  # also registers recbole, csv, parquet
    BadRows,
    DataError,
    Interactions,
    ItemTable,
    parse_interactions,
    parse_items,
    report_unknown_item,
)
from distrec.data.manifest import MANIFEST, load_manifest
from distrec.data.shards import UserSequence
from distrec.data.table import Table
from distrec.data.writer import DomainDataset, existing_is_current, write_domain
from distrec.utils.hashing import sha256_file, sha256_json
from distrec.utils.progress import log, progress

PREPARED = "prepared"


@FORMATS.register(PREPARED)
def read_prepared(path: Path, bad: BadRows) -> Table:
    """`format: prepared` reads no files: the domain is already in data.prepared_dir."""
    raise DataError(
        f"{path}: format {PREPARED!r} reads no files; its domain must already be prepared "
        f"in data.prepared_dir (e.g. by `distrec data synth`)"
    )


def check_data_names(cfg: RunConfig) -> None:
    """Each domain's `format` and `embedded` name a registered one; ConfigError if not.

    This module imports every built-in registration, so only plugins need loading first.
    """
    for i, domain in enumerate(cfg.data.domains):
        try:
            FORMATS.get(domain.format)
            if domain.embedded is not None:
                EMBEDDED_DATASETS.get(domain.embedded)
        except ConfigError as err:
            raise ConfigError(f"data.domains.{i} ({domain.name!r}): {err}") from None


@dataclass(frozen=True)
class DomainSource:
    """A domain's resolved inputs: files, format and rendering."""

    interactions: Path
    items: Path
    format: str
    text_fields: list[str]
    template: str


@dataclass
class ImportedDomain:
    """A domain's log and item table as read and filtered, with the bad rows met on the way."""

    interactions: Interactions
    items: ItemTable
    bad_interactions: BadRows
    bad_items: BadRows


def resolve_source(cfg: RunConfig, domain: DomainConfig) -> DomainSource:
    """The files, format and rendering a domain is imported from (fetching embedded data)."""
    if domain.embedded is not None:
        spec = EMBEDDED_DATASETS.get(domain.embedded)
        raw = spec.fetch(cfg.data.raw_dir)
        return DomainSource(
            raw / spec.interactions,
            raw / spec.items,
            spec.format,
            list(domain.text_fields or spec.text_fields),
            domain.template or spec.template,
        )
    assert domain.interactions and domain.items and domain.text_fields and domain.template
    return DomainSource(
        Path(domain.interactions),
        Path(domain.items),
        domain.format,
        domain.text_fields,
        domain.template,
    )


def prepare_domains(
    cfg: RunConfig, overwrite: bool = False, only: list[str] | None = None
) -> list[Path]:
    """Prepare every domain of `cfg` (or those in `only`); returns their manifest paths."""
    return [prepare_domain(cfg, d, overwrite) for d in select_domains(cfg, only)]


def select_domains(cfg: RunConfig, only: list[str] | None) -> list[DomainConfig]:
    """The domains of `cfg` to prepare (all, or those named in `only`), names checked."""
    check_data_names(cfg)
    names = [d.name for d in cfg.data.domains]
    for name in only or []:
        if name not in names:
            raise DataError(f"--domain {name!r}: not in data.domains (known: {names})")
    return [d for d in cfg.data.domains if not only or d.name in only]


def prepare_domain(cfg: RunConfig, domain: DomainConfig, overwrite: bool = False) -> Path:
    """Import, split and write one domain, unless its folder is already current."""
    root = Path(cfg.data.prepared_dir) / domain.name
    if domain.format == PREPARED:
        return load_manifest(root).root / MANIFEST  # nothing to import; must exist
    source = resolve_source(cfg, domain)
    sources = [
        {"path": str(p), "sha256": sha256_file(p)} for p in (source.interactions, source.items)
    ]
    fingerprint = domain_fingerprint(domain, source, sources)
    if existing_is_current(root, fingerprint, overwrite):
        log(f"{domain.name}: {root} is up to date")
        return root / MANIFEST

    imported = import_domain(domain, source)
    catalog, item_index = build_catalog(
        imported.interactions.items, imported.items, source.template
    )
    sequences = list(build_sequences(imported.interactions, item_index))
    counts = domain_counts(
        imported.items,
        catalog,
        lengths=np.array([len(s.items) for s in sequences], dtype=np.int64),
        repeated=repeated_pairs(imported.interactions),
        bad_interactions=imported.bad_interactions,
        bad_items=imported.bad_items,
    )
    log_counts(domain.name, counts)
    dataset = DomainDataset(
        domain=domain.name,
        fingerprint=fingerprint,
        catalog=catalog,
        sequences=progress(sequences, f"{domain.name}: shards (users)"),
        counts=counts,
        extra=manifest_extra(
            domain,
            source,
            sources,
            has_ratings=imported.interactions.ratings is not None,
            bad=[imported.bad_interactions, imported.bad_items],
        ),
    )
    return write_domain(root, dataset, users_per_shard=domain.users_per_shard)


def manifest_extra(
    domain: DomainConfig,
    source: DomainSource,
    sources: list[dict[str, str]],
    *,
    has_ratings: bool,
    bad: list[BadRows],
) -> dict[str, Any]:
    """The manifest's fields beyond counts and shards: inputs, rendering, config."""
    return {
        "sources": sources,
        "template": source.template,
        "text_fields": source.text_fields,
        "has_ratings": has_ratings,
        "bad_row_examples": [example for rows in bad for example in rows.examples],
        "config": domain.model_dump(mode="json"),
    }


def log_counts(name: str, counts: dict[str, Any]) -> None:
    """One line of a domain's sizes, before its shards are written."""
    log(
        f"{name}: {counts['users']} users, {counts['items']} items, "
        f"{counts['interactions']} interactions; writing shards"
    )


def domain_fingerprint(
    domain: DomainConfig, source: DomainSource, sources: list[dict[str, str]]
) -> str:
    """What makes two prepared domains the same dataset: settings and file contents."""
    # Content, not location: the same files moved elsewhere are the same dataset. The
    # category field and the knowledge graph only choose what evaluation and the model
    # read from the prepared catalog (the graph is built when a run starts).
    exclude = {"interactions", "items", "category_field", "kg_fields", "kg_triples"}
    return sha256_json(
        {
            "domain": domain.model_dump(mode="json", exclude=exclude),
            "sources": [s["sha256"] for s in sources],
            "template": source.template,
            "fields": source.text_fields,
        }
    )


def import_domain(domain: DomainConfig, source: DomainSource) -> ImportedDomain:
    """Read both files with the domain's format, type them, drop unknown items, k-core."""
    log(f"{domain.name}: importing {source.interactions.name} and {source.items.name}")
    read = FORMATS.get(source.format)
    items, bad_items = import_items(domain, source)
    bad_inter = BadRows(domain.on_bad_rows)
    columns = domain.columns
    inter = parse_interactions(
        read(source.interactions, bad_inter),
        columns.user,
        columns.item,
        columns.timestamp,
        columns.rating,
        bad_inter,
    )
    inter = _drop_unknown_items(inter, items, source.interactions, bad_inter)
    if domain.k_core > 0:
        inter = k_core(inter, domain.k_core)
    if len(inter.users) == 0:
        raise DataError(f"{domain.name}: no interactions left after import/filtering")
    return ImportedDomain(inter, items, bad_interactions=bad_inter, bad_items=bad_items)


def import_items(domain: DomainConfig, source: DomainSource) -> tuple[ItemTable, BadRows]:
    """Read and type a domain's item table; returns it with its bad rows."""
    bad = BadRows(domain.on_bad_rows)
    table = FORMATS.get(source.format)(source.items, bad)
    return parse_items(table, domain.item_id_column, source.text_fields, bad), bad


def domain_counts(
    items: ItemTable,
    catalog: pd.DataFrame,
    *,
    lengths: np.ndarray,
    repeated: int,
    bad_interactions: BadRows,
    bad_items: BadRows,
) -> dict[str, Any]:
    """The manifest's `counts`: sizes, what import merged or dropped, and the split.

    `lengths` are the users' sequence lengths (in any order), `repeated` the rows whose
    (user, item) pair occurred before.
    """
    eval_users = int((lengths >= 3).sum())
    return {
        "users": len(lengths),
        "items": len(catalog),
        "interactions": int(lengths.sum()),
        "item_table_rows": len(items.rows)
        + items.duplicate_rows_merged
        + items.conflicting_duplicates,
        "items_without_interactions": len(items.rows) - len(catalog),
        "duplicate_item_rows_merged": items.duplicate_rows_merged,
        "repeated_user_item_pairs": repeated,
        "eval_users": eval_users,
        "train_only_users": len(lengths) - eval_users,
        "bad_rows_skipped": {
            "interactions": bad_interactions.counts,
            "items": bad_items.counts,
        },
    }


def _drop_unknown_items(
    inter: Interactions, items: ItemTable, path: Path, bad: BadRows
) -> Interactions:
    known = np.fromiter((i in items.rows for i in inter.items), dtype=bool, count=len(inter.items))
    for pos in np.flatnonzero(~known):
        report_unknown_item(bad, f"{path}:{inter.lines[pos]}", inter.items[pos])
    return _select(inter, known)


def _select(inter: Interactions, keep: np.ndarray) -> Interactions:
    return Interactions(
        inter.users[keep],
        inter.items[keep],
        inter.timestamps[keep],
        None if inter.ratings is None else inter.ratings[keep],
        inter.lines[keep],
    )


def k_core(inter: Interactions, k: int) -> Interactions:
    """Iteratively keep users and items with at least `k` interactions."""
    while True:
        _, user_of_row, per_user = np.unique(
            inter.users.astype(str), return_inverse=True, return_counts=True
        )
        _, item_of_row, per_item = np.unique(
            inter.items.astype(str), return_inverse=True, return_counts=True
        )
        keep = (per_user[user_of_row] >= k) & (per_item[item_of_row] >= k)
        if keep.all():
            return inter
        inter = _select(inter, keep)


def build_catalog(
    interacted: Iterable[str], items: ItemTable, template: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Ranking catalog = items with at least one interaction (the ids in `interacted`, in
    any order, repeats allowed), indexed 1..N by sorted id."""
    ids = sorted(set(interacted))
    index = {item_id: i + 1 for i, item_id in enumerate(ids)}
    fields = items.fields
    texts = [
        template.format(**dict(zip(fields, items.rows[item_id], strict=True))) for item_id in ids
    ]
    frame = {
        "item_index": np.arange(1, len(ids) + 1, dtype=np.int64),
        "item_id": ids,
        "text": texts,
    }
    for position, name in enumerate(fields):
        frame[f"field.{name}"] = [items.rows[item_id][position] for item_id in ids]
    return pd.DataFrame(frame), index


def build_sequences(inter: Interactions, item_index: dict[str, int]) -> Iterator[UserSequence]:
    """Per user, time order with ties kept in file order (a stable sort)."""
    users = inter.users.astype(str)
    order = np.lexsort((inter.lines, inter.timestamps, users))
    users_sorted = users[order]
    bounds = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1], True])
    items = np.array([item_index[item_id] for item_id in inter.items[order]], dtype=np.int64)
    stamps = inter.timestamps[order]
    ratings = None if inter.ratings is None else inter.ratings[order]
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        yield UserSequence(
            index=index,
            user=str(users_sorted[start]),
            items=items[start:end].tolist(),
            timestamps=stamps[start:end].tolist(),
            ratings=None if ratings is None else ratings[start:end].tolist(),
        )


def repeated_pairs(inter: Interactions) -> int:
    """Rows whose (user, item) pair occurred before (re-watches, re-ratings)."""
    pairs = pd.DataFrame({"u": inter.users, "i": inter.items})
    return int(pairs.duplicated().sum())
