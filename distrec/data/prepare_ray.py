"""`distrec data prepare --engine ray`: the local engine's prepared domain, built on Ray.

Ray tasks read and type the log's parts (distrec/data/parts.py); Ray Data counts users and
items (k-core), partitions rows by the shard their user falls in and writes each shard
from the task that holds it. Users, catalog, split, counts and shard files are the local
engine's (distrec/data/prepare.py), whose pieces this module reuses.

The driver holds the item table and catalog, the users' ids and sequence lengths (sorted,
one entry per user), the manifest's shard entries and a training count per catalog item;
never the log, nor a user's sequence.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distrec.config import ConfigError, DomainConfig, RunConfig
from distrec.data.importers import BadRows, DataError, ItemTable
from distrec.data.manifest import MANIFEST, load_manifest
from distrec.data.parts import (
    ChunkReport,
    LogColumns,
    list_parts,
    log_digest,
    plan_chunks,
    read_chunk,
    replay,
    sha256_uri,
)
from distrec.data.prepare import (
    PREPARED,
    DomainSource,
    build_catalog,
    domain_counts,
    domain_fingerprint,
    import_items,
    log_counts,
    manifest_extra,
    resolve_source,
    select_domains,
)
from distrec.data.shards import SHARD_PATTERN, UserSequence, write_shard
from distrec.data.writer import DomainDataset, existing_is_current, train_length, write_staged
from distrec.utils.hashing import sha256_file
from distrec.utils.memory import peak_rss_mib
from distrec.utils.progress import log


def prepare_domains_ray(
    cfg: RunConfig,
    overwrite: bool = False,
    only: list[str] | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
) -> list[Path]:
    """`prepare_domains` on Ray: on the cluster at `address` (e.g. "auto"), else on a local
    Ray of `workers` CPUs (default: all) started and stopped here. An already initialised
    Ray (a script's, a test's) is used as it is."""
    domains = select_domains(cfg, only)
    with ray_session(address, workers):
        return [prepare_domain_ray(cfg, d, overwrite) for d in domains]


@contextmanager
def ray_session(address: str | None, workers: int | None) -> Iterator[None]:
    """Ray connected (or started) for the block, with the Data settings the engine uses."""
    import ray
    from ray.data.context import DataContext, ShuffleStrategy

    started = not ray.is_initialized()
    if workers is not None and (address is not None or not started):
        log(f"--workers {workers} ignored: the Ray cluster in use decides its CPUs")
    if started and address is not None:
        ray.init(address=address, log_to_driver=False)
    elif started:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    context = DataContext.get_current()
    # Ray 2.60's hash shuffle starts aggregator actors: ~15 s fixed per shuffle on 2 CPUs
    # (measured), more than the whole sort-based shuffle of 10^6 rows.
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    context.enable_progress_bars = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def prepare_domain_ray(cfg: RunConfig, domain: DomainConfig, overwrite: bool = False) -> Path:
    """`prepare_domain` with Ray: import, filter, split and write one domain."""
    started = time.perf_counter()
    root = Path(cfg.data.prepared_dir) / domain.name
    if domain.format == PREPARED:
        return load_manifest(root).root / MANIFEST
    source = resolve_source(cfg, domain)
    parts, sources = _log_sources(domain, source)
    fingerprint = domain_fingerprint(domain, source, sources)
    if existing_is_current(root, fingerprint, overwrite):
        log(f"{domain.name}: {root} is up to date")
        return root / MANIFEST

    log(f"{domain.name}: importing {len(parts)} part file(s) of {sources[0]['path']} on Ray")
    items, bad_items = import_items(domain, source)
    stage = time.perf_counter()
    rows, bad_inter, has_ratings = _read_log(domain, source, parts, items)
    log(f"{domain.name}: read and typed in {time.perf_counter() - stage:.1f}s")
    stage = time.perf_counter()
    rows, users, item_ids = _filter_log(rows, domain.k_core)
    log(f"{domain.name}: counted users and items in {time.perf_counter() - stage:.1f}s")
    if len(users) == 0:
        raise DataError(f"{domain.name}: no interactions left after import/filtering")
    catalog, _ = build_catalog(item_ids.to_pylist(), items, source.template)
    counts = domain_counts(
        items,
        catalog,
        lengths=users["count"].to_numpy(),
        repeated=-1,  # known once the shards are written
        bad_interactions=bad_inter,
        bad_items=bad_items,
    )
    log_counts(domain.name, counts)
    dataset = DomainDataset(
        domain=domain.name,
        fingerprint=fingerprint,
        catalog=catalog,
        sequences=(),
        counts=counts,
        extra=manifest_extra(
            domain, source, sources, has_ratings=has_ratings, bad=[bad_inter, bad_items]
        ),
    )

    def write(shards_dir: Path) -> tuple[list[dict], np.ndarray]:
        keyed = _with_keys(rows, users["user"], catalog["item_id"], domain.users_per_shard)
        shards, train_counts, repeated = _write_shards(keyed, shards_dir, len(catalog))
        counts["repeated_user_item_pairs"] = repeated
        return shards, train_counts

    stage = time.perf_counter()
    manifest = write_staged(root, dataset, write)
    log(f"{domain.name}: shards written in {time.perf_counter() - stage:.1f}s")
    log(
        f"{domain.name}: prepared on Ray in {time.perf_counter() - started:.1f}s; "
        f"driver peak RSS {peak_rss_mib():.0f} MiB (VmHWM)"
    )
    return manifest


def _log_sources(domain: DomainConfig, source: DomainSource) -> tuple[list[str], list[dict]]:
    """The log's part files, and the manifest's `sources` (the local engine's for a single
    file: a folder's hash covers its parts' names and contents)."""
    # The configured string, not a Path: Path("s3://b/k") would lose a slash.
    uri = domain.interactions if domain.embedded is None else None
    if uri is None or "://" not in uri:
        uri = str(source.interactions)
    parts = list_parts(uri)
    hashes = _get([_remote(sha256_uri).remote(p) for p in parts])
    return parts, [
        {"path": uri, "sha256": log_digest(uri, parts, hashes)},
        {"path": str(source.items), "sha256": sha256_file(source.items)},
    ]


def _remote(fn: Any, **options: Any) -> Any:
    import ray

    return ray.remote(**options)(fn) if options else ray.remote(fn)


def _get(refs: list[Any]) -> list[Any]:
    """ray.get in order; a task's DataError/ConfigError is raised as itself (the first one)."""
    import ray

    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, ConfigError):
                raise err.cause from None
            raise
    return out


def _read_log(
    domain: DomainConfig, source: DomainSource, parts: list[str], items: ItemTable
) -> tuple[Any, BadRows, bool]:
    """The log's good rows of known items as a Ray dataset; its bad rows, replayed in file
    order under the domain's policy; whether it has ratings."""
    import ray
    import ray.data

    columns = LogColumns(
        domain.columns.user, domain.columns.item, domain.columns.timestamp, domain.columns.rating
    )
    known = ray.put(pa.array(list(items.rows), pa.string()))
    read = _remote(read_chunk, num_returns=2)
    # A few read tasks per CPU: parallel, and small enough to balance.
    chunks = plan_chunks(parts, source.format, tasks=4 * int(ray.cluster_resources().get("CPU", 1)))
    tasks = [read.remote(chunk, columns, known) for chunk in chunks]
    reports: list[ChunkReport] = _get([report for _, report in tasks])
    bad = BadRows(domain.on_bad_rows)
    replay(bad, reports)
    with_ratings = {r.has_ratings for r in reports}
    if len(with_ratings) > 1:
        raise DataError(
            f"{source.interactions}: some parts have the rating column "
            f"{domain.columns.rating!r} and some do not; give every part the same columns"
        )
    return ray.data.from_arrow_refs([table for table, _ in tasks]), bad, with_ratings.pop()


def _key_counts(rows: Any) -> tuple[pa.Table, pa.Table]:
    """(user, count) per user and (item, count) per item, each sorted by id (code points).

    Counted per block, then merged per hash bucket of the id, both columns in one pass:
    Ray Data's own groupby count on a string key took 12 s for 10^6 rows on 2 CPUs
    (measured), this takes a few.
    """
    import ray

    if rows.count() == 0:
        users, items = (
            pa.table({k: pa.array([], pa.string()), "count": pa.array([], pa.int64())})
            for k in _COUNTED
        )
        return users, items
    buckets = max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
    partial = rows.map_batches(
        _partial_counts, fn_kwargs={"buckets": buckets}, batch_format="pyarrow", batch_size=None
    )
    merged = partial.groupby("bucket").map_groups(_merge_counts, batch_format="pyarrow")
    # Partitions without rows come back as tables without columns.
    counted = pa.concat_tables([t for t in ray.get(merged.to_arrow_refs()) if t.num_rows])
    out = []
    for kind, key in enumerate(_COUNTED):
        of_kind = counted.filter(pc.equal(counted["kind"], kind))
        out.append(pa.table({key: of_kind["id"], "count": of_kind["count"]}).sort_by(key))
    return out[0], out[1]


_COUNTED = ("user", "item")


def _partial_counts(batch: pa.Table, buckets: int) -> pa.Table:
    import pandas as pd

    tables = []
    for kind, key in enumerate(_COUNTED):
        counted = pc.value_counts(batch[key])
        values = counted.field("values")
        bucket = pd.util.hash_array(values.to_numpy(zero_copy_only=False)) % buckets
        tables.append(
            pa.table(
                {
                    "kind": pa.array(np.full(len(values), kind, dtype=np.int8)),
                    "id": values,
                    "count": counted.field("counts"),
                    "bucket": pa.array(bucket.astype(np.int64) + kind * buckets),
                }
            )
        )
    return pa.concat_tables(tables)


def _merge_counts(group: pa.Table) -> pa.Table:
    summed = group.group_by(["kind", "id"]).aggregate([("count", "sum")])
    return pa.table({"kind": summed["kind"], "id": summed["id"], "count": summed["count_sum"]})


def _filter_log(rows: Any, k: int) -> tuple[Any, pa.Table, pa.Array]:
    """k-core (`prepare.k_core`'s iteration: drop users and items under `k` rows together,
    until none is); returns the rows, (user, count) per user and the item ids, sorted."""
    import ray

    while True:
        users, items = _key_counts(rows)
        short_users = users.filter(pc.less(users["count"], k))["user"]
        short_items = items.filter(pc.less(items["count"], k))["item"]
        if k == 0 or len(short_users) + len(short_items) == 0:
            return rows, users, items["item"].combine_chunks()
        drop = {"users": ray.put(short_users), "items": ray.put(short_items)}
        rows = rows.map_batches(_drop_rows, fn_kwargs=drop, batch_format="pyarrow").materialize()


def _resolve(value: Any) -> Any:
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _drop_rows(batch: pa.Table, users: Any, items: Any) -> pa.Table:
    dropped = pc.or_(
        pc.is_in(batch["user"], value_set=_resolve(users)),
        pc.is_in(batch["item"], value_set=_resolve(items)),
    )
    return batch.filter(pc.invert(dropped))


def _with_keys(rows: Any, users: pa.ChunkedArray, item_ids: Any, users_per_shard: int) -> Any:
    """Rows with their user's index (position among sorted ids), item index (1..N) and shard."""
    import ray

    keys = {
        "users": ray.put(users.combine_chunks()),
        "items": ray.put(pa.array(list(item_ids), pa.string())),
        "users_per_shard": users_per_shard,
    }
    return rows.map_batches(_add_keys, fn_kwargs=keys, batch_format="pyarrow")


def _add_keys(batch: pa.Table, users: Any, items: Any, users_per_shard: int) -> pa.Table:
    index = pc.index_in(batch["user"], value_set=_resolve(users)).to_numpy().astype(np.int64)
    item_index = pc.index_in(batch["item"], value_set=_resolve(items)).to_numpy() + 1
    return (
        batch.append_column("index", pa.array(index))
        .append_column("item_index", pa.array(item_index.astype(np.int32)))
        .append_column("shard", pa.array(index // users_per_shard))
    )


def _write_shards(
    keyed: Any, shards_dir: Path, num_items: int
) -> tuple[list[dict], np.ndarray, int]:
    """Every shard written by the task holding its rows (Ray Data groups rows by shard);
    returns the shard entries in order, training counts per catalog index, repeated pairs."""
    import ray

    shards_dir.mkdir(parents=True, exist_ok=True)
    written = keyed.groupby("shard").map_groups(
        _write_group, fn_kwargs={"shards_dir": str(shards_dir.absolute())}, batch_format="pyarrow"
    )
    infos: dict[int, dict] = {}
    train_counts = np.zeros(num_items + 1, dtype=np.int64)
    repeated = 0
    for ref in written.to_arrow_refs():
        for row in ray.get(ref).to_pylist():
            infos[row["shard"]] = json.loads(row["info"])
            np.add.at(train_counts, row["train_items"], row["train_counts"])
            repeated += row["repeated"]
    if sorted(infos) != list(range(len(infos))):
        raise RuntimeError(f"shards {sorted(infos)} are not numbered 0..{len(infos) - 1}")
    return [infos[n] for n in range(len(infos))], train_counts, repeated


def _write_group(group: pa.Table, shards_dir: str) -> pa.Table:
    """Write one shard from all its users' rows: per user, time order with ties in file
    order (`build_sequences`' stable sort), users in index order."""
    index = group["index"].to_numpy()
    stamps = group["ts"].to_numpy()
    order = np.lexsort((group["line"].to_numpy(), group["part"].to_numpy(), stamps, index))
    index, stamps = index[order], stamps[order]
    items = group["item_index"].to_numpy()[order].astype(np.int64)
    ratings = group["rating"].to_numpy()[order] if "rating" in group.column_names else None
    bounds = np.flatnonzero(np.r_[True, index[1:] != index[:-1], True])
    starts = bounds[:-1]
    user_ids = group["user"].take(pa.array(order[starts])).to_pylist()
    sequences = [
        UserSequence(
            index=int(index[start]),
            user=user,
            items=items[start:end].tolist(),
            timestamps=stamps[start:end].tolist(),
            ratings=None if ratings is None else ratings[start:end].tolist(),
        )
        for user, start, end in zip(user_ids, starts, bounds[1:], strict=True)
    ]
    shard = int(group["shard"][0].as_py())
    info = write_shard(Path(shards_dir) / SHARD_PATTERN.format(shard), sequences)
    train = np.concatenate([s.items[: train_length(len(s.items))] for s in sequences])
    train_items, train_counts = np.unique(train.astype(np.int64), return_counts=True)
    pairs = index * (int(items.max()) + 1) + items
    return pa.table(
        {
            "shard": [shard],
            "info": [json.dumps(info)],
            "train_items": [train_items.tolist()],
            "train_counts": [train_counts.tolist()],
            "repeated": [len(pairs) - len(np.unique(pairs))],
        }
    )
