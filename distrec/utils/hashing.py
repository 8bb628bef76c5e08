"""Content hashes used to key caches and to verify files."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read `chunk` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hash of a JSON-serialisable value, independent of dict key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sha256_files(root: Path, names: Iterable[str]) -> dict[str, str]:
    """name -> hex sha256 of `root / name`, hashed on a few threads (hashlib releases the
    GIL while it hashes, so a folder of shards or checkpoint files is hashed in parallel)."""
    names = list(names)
    workers = max(1, min(8, os.cpu_count() or 1, len(names)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(names, pool.map(lambda n: sha256_file(root / n), names), strict=True))


@dataclass(frozen=True)
class Mismatch:
    """A file whose bytes are not the ones recorded: `actual` is None when it is missing."""

    name: str
    expected: str
    actual: str | None


def mismatches(root: Path, expected: dict[str, str]) -> list[Mismatch]:
    """The files under `root` (name -> recorded sha256) that are missing or differ."""
    present = [name for name in expected if (root / name).is_file()]
    actual = sha256_files(root, present)
    return [
        Mismatch(name, digest, actual.get(name))
        for name, digest in expected.items()
        if actual.get(name) != digest
    ]
