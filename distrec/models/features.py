"""Frozen-LM item features, computed once per catalog and cached as safetensors.

The cache key hashes (model, pooling, template, catalog content, token limit),
so a changed catalog or template recomputes instead of reusing stale features.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distrec.models.encoder import encode_tokens
from distrec.utils.hashing import sha256_json
from distrec.utils.progress import log, progress


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


@torch.no_grad()
def encode_texts(
    lm,
    tokenizer,
    texts: list[str],
    pooling: str,
    max_tokens: int,
    batch_size: int = 256,
    autocast: bool = False,
    desc: str = "encoding",
) -> torch.Tensor:
    """Pooled LM states for `texts` (fp32), in batches, with progress."""
    lm.eval()
    device = next(lm.parameters()).device
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    out = []
    for chunk in progress(chunks, desc):
        tok = tokenizer(
            chunk, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            vec = encode_tokens(
                lm, tok["input_ids"].to(device), tok["attention_mask"].to(device), pooling
            )
        out.append(vec.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, lm.config.hidden_size)


def cached_catalog_features(
    key: str,
    cache_dir: str | Path,
    texts: list[str],
    encode: Callable[[list[str]], torch.Tensor],
    rank: int = 0,
    world: int = 1,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    barrier: Callable[[], None] | None = None,
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
    mine = encode(texts[rank::world])
    if world > 1 and gather is not None:
        parts = gather(mine)
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
    if barrier is not None:
        barrier()
    return features
