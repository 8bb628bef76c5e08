"""Write user sequences as WebDataset tar shards; each sample is one user's whole history."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds

from distrec.utils.hashing import sha256_file

SHARD_PATTERN = "seq-{:06d}.tar"


@dataclass
class UserSequence:
    """A user's interactions in time order; the split (LOO) is derived, not stored."""

    index: int
    user: str
    items: list[int]  # 1-based catalog indices (0 is padding)
    timestamps: list[float]
    ratings: list[float] | None = None

    def to_sample(self) -> dict:
        payload = {"user": self.user, "items": self.items, "ts": self.timestamps}
        if self.ratings is not None:
            payload["ratings"] = self.ratings
        return {"__key__": f"u{self.index:010d}", "seq.json": json.dumps(payload).encode()}


def decode_sample(sample: dict) -> dict:
    payload = json.loads(sample["seq.json"])
    payload["index"] = int(sample["__key__"][1:])
    return payload


def write_shards(sequences: Iterable[UserSequence], out_dir: Path, users_per_shard: int) -> list[dict]:
    """Write shards of `users_per_shard` users; returns [{name, users, sha256, bytes}]."""
    out_dir.mkdir(parents=True, exist_ok=True)
    infos: list[dict] = []
    for number, chunk in enumerate(_chunks(sequences, users_per_shard)):
        name = SHARD_PATTERN.format(number)
        path = out_dir / name
        # A fixed mtime makes shards byte-reproducible: same inputs, same sha256.
        with wds.TarWriter(str(path), mtime=0.0) as sink:
            for seq in chunk:
                sink.write(seq.to_sample())
        infos.append({"name": name, "users": len(chunk), "sha256": sha256_file(path),
                      "bytes": path.stat().st_size})
    return infos


def _chunks(items: Iterable[UserSequence], size: int) -> Iterator[list[UserSequence]]:
    chunk: list[UserSequence] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_shard(url: str) -> list[dict]:
    """Decoded samples of one shard; `url` may be a path, `pipe:` command or object-store URL."""
    with wds.gopen(url, "rb") as stream:
        return [decode_sample({"__key__": e["fname"].split(".", 1)[0], "seq.json": e["data"]})
                for e in wds.tariterators.tar_file_iterator(stream)]


def read_sequences(urls: list[str]) -> list[dict]:
    """Every user sequence of a domain, in user-index order (evaluation reads them all on
    every rank and shards users, not shards)."""
    return sorted((s for url in urls for s in read_shard(url)), key=lambda s: s["index"])
