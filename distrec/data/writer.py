"""The one writer of prepared domains (used by `prepare` and `synth`).

Writing is atomic: everything goes to a temporary sibling folder that is
renamed into place only when complete, so a crash never leaves a manifest that
points at half-written shards. An existing dataset built from different inputs
is never replaced without `overwrite`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import save_file

from distrec import __version__
from distrec.config.errors import ConfigError
from distrec.data.manifest import CATALOG, FEATURES, MANIFEST, SCHEMA_VERSION
from distrec.data.shards import UserSequence, write_shards
from distrec.utils.files import folder_bytes, no_space_cause, out_of_space_error, swap_into_place
from distrec.utils.hashing import sha256_file
from distrec.utils.progress import log


def existing_is_current(root: Path, fingerprint: str, overwrite: bool) -> bool:
    """True if `root` already holds this exact dataset; raises if it holds another one."""
    manifest = root / MANIFEST
    if not root.exists():
        return False
    if manifest.exists():
        try:
            current = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            current = {}
        if current.get("fingerprint") == fingerprint:
            if current.get("schema_version") != SCHEMA_VERSION:
                # Same inputs, older on-disk format: rebuilding loses nothing.
                log(
                    f"{root}: schema {current.get('schema_version')} -> {SCHEMA_VERSION}, rewriting"
                )
                return False
            if not overwrite:
                return True
    if not overwrite:
        raise ConfigError(
            f"{root} already holds a different dataset (other inputs or settings); "
            f"re-run with --overwrite to replace it, or change data.prepared_dir"
        )
    return False


@dataclass
class DomainDataset:
    """What a prepared domain folder will hold, as its producer (prepare, synth) built it.

    `catalog` has `item_index` 1..N, `item_id`, `text` and `field.*` columns; `sequences`
    are the users in index order (`write_domain` writes them; `write_staged` leaves the
    shards to its writer and does not read them); `counts` and `extra` (producer-specific
    fields such as sources or the synth spec) go into the manifest as they are; `features`
    [N, D] float32 are generated item features (synth `feature_dim`) that training reads
    instead of encoding the item texts with the LM, or None.
    """

    domain: str
    fingerprint: str
    catalog: pd.DataFrame
    sequences: Iterable[UserSequence]
    counts: dict[str, Any]
    extra: dict[str, Any]
    features: np.ndarray | None = None


ShardWriter = Callable[[Path], tuple[list[dict], np.ndarray]]
"""Writes a domain's shards into the folder it is given; returns their manifest entries (in
shard order) and the training-part interactions per catalog index (0 = padding, unused)."""


def write_domain(root: Path, dataset: DomainDataset, *, users_per_shard: int) -> Path:
    """Write catalog + shards + manifest into `root` atomically; returns the manifest path."""

    def write(shards_dir: Path) -> tuple[list[dict], np.ndarray]:
        train_counts = np.zeros(len(dataset.catalog) + 1, dtype=np.int64)
        shards = write_shards(
            _counting(dataset.sequences, train_counts), shards_dir, users_per_shard
        )
        return shards, train_counts

    return write_staged(root, dataset, write)


def write_staged(root: Path, dataset: DomainDataset, write_shards_into: ShardWriter) -> Path:
    """`write_domain` with the shards written by `write_shards_into(staging / "shards")` (in
    this process, or by a cluster's tasks) instead of from `dataset.sequences`.

    `dataset.counts` is read after the writer returns, so a writer may complete counts it
    only learns while writing (the Ray engine's repeated pairs)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        shards, train_counts = write_shards_into(staging / "shards")
        # Training-part popularity: the popularity baseline and logQ correction read it.
        catalog = dataset.catalog.assign(train_count=train_counts[1:])
        catalog.to_parquet(staging / CATALOG, index=False)
        features = _write_features(staging, dataset)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "domain": dataset.domain,
            "fingerprint": dataset.fingerprint,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "distrec_version": __version__,
            "counts": dataset.counts,
            "split": "leave-one-out: last = test, second-to-last = valid; users with < 3 "
            "interactions are train-only",
            "catalog": {"file": CATALOG, "sha256": sha256_file(staging / CATALOG)},
            "shards": shards,
            **({"features": features} if features else {}),
            **dataset.extra,
        }
        # The manifest is written last: its presence marks a complete dataset.
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        swap_into_place(staging, root)
    except BaseException as err:
        _discard(staging, root, err)
        raise
    return root / MANIFEST


def _discard(staging: Path, root: Path, err: BaseException) -> None:
    """Remove the partial `staging` folder of a failed write of `root`; a full disk is
    raised as OutOfSpace naming the folder and the space it needs."""
    full = no_space_cause(err)
    written = folder_bytes(staging) if full is not None else 0
    shutil.rmtree(staging, ignore_errors=True)
    if full is not None:
        raise out_of_space_error(
            full,
            root,
            written=written,
            previous=root if root.exists() else None,
            elsewhere="set data.prepared_dir (or synth --out) to a disk with room",
        ) from err


def _write_features(staging: Path, dataset: DomainDataset) -> dict[str, Any] | None:
    """Write the generated item features (if any) as safetensors; their manifest entry."""
    if dataset.features is None:
        return None
    rows, dim = dataset.features.shape
    if rows != len(dataset.catalog):
        raise ValueError(
            f"{dataset.domain}: {rows} feature rows for {len(dataset.catalog)} catalog items"
        )
    values = np.ascontiguousarray(dataset.features, dtype=np.float32)
    save_file({"features": values}, str(staging / FEATURES))
    return {
        "file": FEATURES,
        "dim": int(dim),
        "source": "generated",
        "sha256": sha256_file(staging / FEATURES),
    }


def train_length(length: int) -> int:
    """Length of the training prefix of a `length`-item leave-one-out sequence: the last
    two (valid, test) are held out when there are at least 3 items."""
    return length - 2 if length >= 3 else length


def train_part(items: list[int]) -> list[int]:
    """The training prefix of a leave-one-out sequence."""
    return items[: train_length(len(items))]


def _counting(sequences: Iterable[UserSequence], counts: np.ndarray) -> Iterator[UserSequence]:
    for seq in sequences:
        np.add.at(counts, train_part(seq.items), 1)
        yield seq
