"""`distrec data prepare`: import a domain, split it leave-one-out and write shards."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distrec.config import DomainConfig, RunConfig
from distrec.data.fetch import EMBEDDED, fetch_movielens
from distrec.data.importers import (
    BadRows,
    DataError,
    Interactions,
    ItemTable,
    parse_interactions,
    parse_items,
    read_table,
)
from distrec.data.manifest import load_manifest
from distrec.data.shards import UserSequence
from distrec.data.writer import existing_is_current, write_domain
from distrec.utils.hashing import sha256_file, sha256_json
from distrec.utils.progress import log, progress


@dataclass(frozen=True)
class DomainSource:
    """A domain's resolved inputs: files, format and rendering."""

    interactions: Path
    items: Path
    format: str
    text_fields: list[str]
    template: str


def resolve_source(cfg: RunConfig, domain: DomainConfig) -> DomainSource:
    if domain.embedded is not None:
        spec = EMBEDDED[domain.embedded]
        raw = fetch_movielens(cfg.data.raw_dir)
        return DomainSource(
            raw / spec.interactions,
            raw / spec.items,
            "recbole",
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
    names = [d.name for d in cfg.data.domains]
    for name in only or []:
        if name not in names:
            raise DataError(f"--domain {name!r}: not in data.domains (known: {names})")
    chosen = [d for d in cfg.data.domains if not only or d.name in only]
    return [prepare_domain(cfg, d, overwrite) for d in chosen]


def prepare_domain(cfg: RunConfig, domain: DomainConfig, overwrite: bool = False) -> Path:
    root = Path(cfg.data.prepared_dir) / domain.name
    if domain.format == "prepared":
        return load_manifest(root).root / "manifest.json"  # nothing to import; must exist
    source = resolve_source(cfg, domain)
    sources = [
        {"path": str(p), "sha256": sha256_file(p)} for p in (source.interactions, source.items)
    ]
    # Content, not location: the same files moved elsewhere are the same dataset.
    fingerprint = sha256_json(
        {
            "domain": domain.model_dump(mode="json", exclude={"interactions", "items"}),
            "sources": [s["sha256"] for s in sources],
            "template": source.template,
            "fields": source.text_fields,
        }
    )
    if existing_is_current(root, fingerprint, overwrite):
        log(f"{domain.name}: {root} is up to date")
        return root / "manifest.json"

    log(f"{domain.name}: importing {source.interactions.name} and {source.items.name}")
    bad_items, bad_inter = BadRows(domain.on_bad_rows), BadRows(domain.on_bad_rows)
    items = parse_items(
        read_table(source.items, source.format, bad_items),
        domain.item_id_column,
        source.text_fields,
        bad_items,
    )
    cols = domain.columns
    inter = parse_interactions(
        read_table(source.interactions, source.format, bad_inter),
        cols.user,
        cols.item,
        cols.timestamp,
        cols.rating,
        bad_inter,
    )
    inter = _drop_unknown_items(inter, items, source.interactions, bad_inter)
    if domain.k_core > 0:
        inter = k_core(inter, domain.k_core)
    if len(inter.users) == 0:
        raise DataError(f"{domain.name}: no interactions left after import/filtering")

    catalog, item_index = build_catalog(inter, items, source.template)
    sequences = list(build_sequences(inter, item_index))
    counts = {
        "users": len(sequences),
        "items": len(catalog),
        "interactions": len(inter.users),
        "item_table_rows": len(items.rows)
        + items.duplicate_rows_merged
        + items.conflicting_duplicates,
        "items_without_interactions": len(items.rows) - len(catalog),
        "duplicate_item_rows_merged": items.duplicate_rows_merged,
        "repeated_user_item_pairs": repeated_pairs(inter),
        "eval_users": sum(len(s.items) >= 3 for s in sequences),
        "train_only_users": sum(len(s.items) < 3 for s in sequences),
        "bad_rows_skipped": {"interactions": bad_inter.counts, "items": bad_items.counts},
    }
    log(
        f"{domain.name}: {counts['users']} users, {counts['items']} items, "
        f"{counts['interactions']} interactions; writing shards"
    )
    return write_domain(
        root,
        domain=domain.name,
        fingerprint=fingerprint,
        catalog=catalog,
        sequences=progress(sequences, f"{domain.name}: shards (users)"),
        users_per_shard=domain.users_per_shard,
        counts=counts,
        extra={
            "sources": sources,
            "template": source.template,
            "text_fields": source.text_fields,
            "has_ratings": inter.ratings is not None,
            "bad_row_examples": bad_inter.examples + bad_items.examples,
            "config": domain.model_dump(mode="json"),
        },
    )


def _drop_unknown_items(
    inter: Interactions, items: ItemTable, path: Path, bad: BadRows
) -> Interactions:
    known = np.fromiter((i in items.rows for i in inter.items), dtype=bool, count=len(inter.items))
    for pos in np.flatnonzero(~known)[:] if not known.all() else []:
        bad.report(
            f"{path}:{inter.lines[pos]} column 'item'",
            f"item {inter.items[pos]!r} is not in the item table",
            "add the item to the item table",
        )
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
        _, u_inv, u_cnt = np.unique(
            inter.users.astype(str), return_inverse=True, return_counts=True
        )
        _, i_inv, i_cnt = np.unique(
            inter.items.astype(str), return_inverse=True, return_counts=True
        )
        keep = (u_cnt[u_inv] >= k) & (i_cnt[i_inv] >= k)
        if keep.all():
            return inter
        inter = _select(inter, keep)


def build_catalog(
    inter: Interactions, items: ItemTable, template: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Ranking catalog = items with at least one interaction, indexed 1..N by sorted id."""
    ids = sorted(set(inter.items.tolist()))
    index = {item_id: i + 1 for i, item_id in enumerate(ids)}
    fields = items.fields
    texts = [template.format(**dict(zip(fields, items.rows[i], strict=True))) for i in ids]
    frame = {
        "item_index": np.arange(1, len(ids) + 1, dtype=np.int64),
        "item_id": ids,
        "text": texts,
    }
    for j, f in enumerate(fields):
        frame[f"field.{f}"] = [items.rows[i][j] for i in ids]
    return pd.DataFrame(frame), index


def build_sequences(inter: Interactions, item_index: dict[str, int]) -> Iterator[UserSequence]:
    """Per user, time order with ties kept in file order (a stable sort)."""
    users = inter.users.astype(str)
    order = np.lexsort((inter.lines, inter.timestamps, users))
    users_sorted = users[order]
    bounds = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1], True])
    items = np.array([item_index[i] for i in inter.items[order]], dtype=np.int64)
    stamps = inter.timestamps[order]
    ratings = None if inter.ratings is None else inter.ratings[order]
    for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        yield UserSequence(
            index=n,
            user=str(users_sorted[lo]),
            items=items[lo:hi].tolist(),
            timestamps=stamps[lo:hi].tolist(),
            ratings=None if ratings is None else ratings[lo:hi].tolist(),
        )


def repeated_pairs(inter: Interactions) -> int:
    pairs = pd.DataFrame({"u": inter.users, "i": inter.items})
    return int(pairs.duplicated().sum())
