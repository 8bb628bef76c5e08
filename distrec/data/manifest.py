"""The prepared-dataset manifest: what a domain folder holds and how to check it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distrec.config.errors import ConfigError
from distrec.utils.hashing import Mismatch, mismatches

SCHEMA_VERSION = 3  # 2: packed binary samples (seq.bin) in USTAR tars; 3: per-user lengths
MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"
FEATURES = "features.safetensors"  # generated item features [N, D] (synth --feature-dim)
# What a domain or shard name in a manifest may be: a plain file name (no path, no shell).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ShardInfo:
    """One shard's entry in the manifest: file name, users, their lengths, hash and size."""

    name: str
    users: int
    lengths: list[int]  # each user's sequence length, in shard order
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A read-only view of `manifest.json`; `root` is the domain folder."""

    root: Path
    data: dict[str, Any]

    @property
    def domain(self) -> str:
        """The domain's name (as in data.domains)."""
        return self.data["domain"]

    @property
    def counts(self) -> dict[str, int]:
        """The prepared domain's sizes (`users`, `items`, `interactions`, ...)."""
        return self.data["counts"]

    @property
    def shards(self) -> list[ShardInfo]:
        """Every shard's entry, in shard order."""
        return [ShardInfo(**s) for s in self.data["shards"]]

    @property
    def num_items(self) -> int:
        """N, the catalog's items (indices 1..N; 0 is padding)."""
        return int(self.counts["items"])

    @property
    def fingerprint(self) -> str:
        """Hash of the preparation settings and source files: equal means the same dataset."""
        return self.data["fingerprint"]

    def shard_urls(self, template: str | None = None) -> list[str]:
        """Where to read each shard: local files by default, or `template` with {root}
        (this folder), {domain} and {shard} filled in, e.g.
        `pipe:aws s3 cp s3://bucket/prepared/{domain}/shards/{shard} -` (read via webdataset's gopen)."""
        names = [s.name for s in self.shards]
        unsafe = [n for n in [self.domain, *names] if not SAFE_NAME.fullmatch(n)]
        if unsafe:
            # A manifest is data, not configuration: its names fill a `pipe:` template that
            # webdataset hands to a shell, and must not be able to add a command (or leave
            # the domain folder). Only the run config's data.shard_url may say what runs.
            raise ConfigError(
                f"{self.root / MANIFEST}: names {unsafe[:3]} are not plain file names "
                f"(letters, digits, '.', '_', '-'); refusing to build shard URLs from them. "
                f"{REPREPARE}"
            )
        if template is None:
            return [str(self.root / "shards" / n) for n in names]
        return [template.format(root=self.root, domain=self.domain, shard=n) for n in names]

    @property
    def catalog_path(self) -> Path:
        """The domain's catalog.parquet (one row per item, in index order)."""
        return self.root / CATALOG

    @property
    def feature_dim(self) -> int:
        """D of the domain's generated item features (synth --feature-dim); 0 without them."""
        entry = self.data.get("features")
        return int(entry["dim"]) if entry else 0

    @property
    def features_path(self) -> Path | None:
        """The generated item features' safetensors file ([N, D] float32), or None."""
        entry = self.data.get("features")
        return self.root / entry["file"] if entry else None


REPREPARE = "re-run `distrec data prepare --overwrite` (`distrec data synth --overwrite` for a synthetic domain)"


def recorded_hashes(m: Manifest, *, shards: bool = True) -> dict[str, str]:
    """Path under the domain folder -> the sha256 its manifest records, for the catalog, the
    generated features (if any) and, with `shards`, every shard. A manifest that records no
    hash for one of them is a ConfigError: its data cannot be verified."""
    entries = [m.data["catalog"], *([m.data["features"]] if m.data.get("features") else [])]
    named = {e.get("file", "?"): e for e in entries}
    if shards:
        named |= {f"shards/{s.get('name', '?')}": s for s in m.data["shards"]}
    unhashed = [name for name, entry in named.items() if not entry.get("sha256")]
    if unhashed:
        raise ConfigError(
            f"{m.root / MANIFEST}: no sha256 recorded for {unhashed[:3]}"
            f"{' and more' if len(unhashed) > 3 else ''}, so the data cannot be verified "
            f"(prepared by another tool or edited by hand); {REPREPARE}"
        )
    return {name: entry["sha256"] for name, entry in named.items()}


def damaged_files(m: Manifest, *, shards: bool = True) -> list[Mismatch]:
    """The domain's files (see `recorded_hashes`) that are missing or whose sha256 is not
    the recorded one."""
    return mismatches(m.root, recorded_hashes(m, shards=shards))


def damage_report(m: Manifest, damaged: list[Mismatch]) -> str:
    """What is wrong with `damaged` files of the domain and what to do, in one message."""
    lines = [
        f"{m.root / d.name}: missing"
        if d.actual is None
        else f"{m.root / d.name}: sha256 {d.actual}, the manifest records {d.expected}"
        for d in damaged
    ]
    return (
        f"domain {m.domain!r}: {len(damaged)} prepared file(s) corrupt or modified since "
        f"they were written: {'; '.join(lines)}; {REPREPARE} to rewrite the domain"
    )


def load_manifest(path: str | Path) -> Manifest:
    """Load a manifest by file or by domain folder; errors say how to make one."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.exists():
        raise ConfigError(f"{path}: no manifest; run `distrec data prepare --config ...` first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: manifest is not valid JSON ({err}); re-run prepare") from err
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: schema_version={version!r}, this distrec reads {SCHEMA_VERSION}; "
            f"re-run `distrec data prepare --overwrite`"
        )
    return Manifest(root=path.parent, data=data)


def manifest_path(prepared_dir: str | Path, domain: str) -> Path:
    """Where `domain`'s manifest lies under `prepared_dir`."""
    return Path(prepared_dir) / domain / MANIFEST
