"""Frozen-LM item features, computed once per catalog and cached as safetensors.

The cache key hashes (model, pooling, template, catalog content, token limit),
so a changed catalog or template recomputes instead of reusing stale features.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distrec.models.encoder import encode_tokens
from distrec.utils.hashing import sha256_json
from distrec.utils.progress import log, progress
from distrec.utils.sharding import SINGLE, Shard


def feature_key(
    model: str,
    pooling: str,
    template: str,
    catalog_sha: str,
    max_tokens: int,
    precision: str = "fp32",
) -> str:
    """Cache key of a catalog's LM features; the precision they were encoded in is part of
    it (bf16 and fp32 features differ, so sharing them made results depend on run order)."""
    return sha256_json(
        {
            "model": model,
            "pooling": pooling,
            "template": template,
            "catalog": catalog_sha,
            "max_tokens": max_tokens,
            "precision": precision,
        }
    )[:24]


@dataclass(frozen=True)
class TextEncoding:
    """How item texts become pooled LM states: `pooling` (cls|mean|last), the token limit,
    bf16 autocast or not, and how many texts go through the LM at once."""

    pooling: str
    max_tokens: int
    autocast: bool = False
    batch_size: int = 256


@torch.no_grad()
def encode_texts(lm, tokenizer, texts: list[str], how: TextEncoding, desc: str) -> torch.Tensor:
    """[len(texts), H] pooled LM states (fp32), in batches, with progress."""
    lm.eval()
    device = next(lm.parameters()).device
    size = how.batch_size
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    out = []
    for chunk in progress(chunks, desc):
        tok = tokenizer(
            chunk, padding=True, truncation=True, max_length=how.max_tokens, return_tensors="pt"
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=how.autocast):
            vec = encode_tokens(
                lm, tok["input_ids"].to(device), tok["attention_mask"].to(device), how.pooling
            )
        out.append(vec.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, lm.config.hidden_size)


def cached_catalog_features(
    key: str,
    cache_dir: str | Path,
    texts: list[str],
    encode: Callable[[list[str]], torch.Tensor],
    shard: Shard = SINGLE,
) -> torch.Tensor:
    """[N + 1, H] features (row 0 = padding), from cache or computed sharded across ranks."""
    path = Path(cache_dir) / "features" / f"{key}.safetensors"
    if path.exists():
        stored = load_file(str(path))
        if stored["features"].shape[0] == len(texts) + 1:
            log(f"item features: cache hit {path.name}")
            return stored["features"]
        log(f"item features: {path.name} does not match the catalog; recomputing")
    # Each rank encodes rows rank::world; the gather reassembles catalog order.
    rank, world = shard.rank, shard.world
    mine = encode(texts[rank::world])
    parts = shard.gathered(mine)
    if len(parts) > 1:
        rows = torch.zeros(len(texts), mine.shape[1])
        for r, part in enumerate(parts):
            rows[r::world] = part[: len(range(r, len(texts), world))]
    else:
        rows = mine
    features = torch.cat([torch.zeros(1, rows.shape[1]), rows])
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"features": features.contiguous()}, str(tmp), metadata={"key": key})
        os.replace(tmp, path)
    shard.wait()
    return features
