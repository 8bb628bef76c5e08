"""Per-catalog tokenization cache and the in-worker transform that attaches tokens to a batch.

The whole catalog is tokenized once (fast tokenizers make it milliseconds per
thousand items) and cached as safetensors keyed by tokenizer + catalog; workers
then only index rows. End-to-end mode encodes each distinct item of a batch once.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distrec.utils.hashing import sha256_json


class TokenTable:
    """input_ids [N+1, T] (row 0 = padding item) and lengths [N+1]."""

    def __init__(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> None:
        self.input_ids, self.lengths = input_ids, lengths

    @classmethod
    def build(
        cls,
        tokenizer,
        texts: list[str],
        max_tokens: int,
        cache_dir: str | Path,
        tokenizer_name: str,
        catalog_sha: str,
    ) -> TokenTable:
        """Tokenize `texts` (row 0 = padding), or load them from `cache_dir` if cached."""
        key = sha256_json(
            {
                "tok": tokenizer_name,
                "catalog": catalog_sha,
                "max": max_tokens,
                "vocab": len(tokenizer),
                "pad": tokenizer.pad_token_id,
            }
        )[:24]
        path = Path(cache_dir) / "tokens" / f"{key}.safetensors"
        if path.exists():
            cached = load_file(str(path))
            if cached["input_ids"].shape[0] == len(texts) + 1:
                return cls(cached["input_ids"], cached["lengths"])
        enc = tokenizer(
            ["", *texts],
            padding="max_length",
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        )
        ids = enc["input_ids"].to(torch.int32)
        lengths = enc["attention_mask"].sum(1).to(torch.int32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"input_ids": ids.contiguous(), "lengths": lengths.contiguous()}, str(tmp))
        os.replace(tmp, path)
        return cls(ids, lengths)


class AttachTokens:
    """Batch transform: unique items of the batch, their tokens, and local indices."""

    def __init__(self, table: TokenTable, pad_id: int) -> None:
        self.table, self.pad_id = table, pad_id

    def __call__(self, batch: dict) -> dict:
        both = torch.cat([batch["inputs"].flatten(), batch["targets"].flatten()])
        uniq = torch.unique(both[both > 0])
        if uniq.numel() == 0:
            uniq = torch.tensor([1])
        local = torch.zeros(int(self.table.lengths.shape[0]), dtype=torch.long)
        local[uniq] = torch.arange(1, uniq.numel() + 1)
        width = max(1, int(self.table.lengths[uniq].max()))
        ids = self.table.input_ids[uniq, :width].long()
        mask = torch.arange(width)[None, :] < self.table.lengths[uniq, None]
        ids = ids.masked_fill(~mask, self.pad_id)
        batch.update(
            items=uniq,
            input_ids=ids,
            attention_mask=mask.long(),
            inputs_local=local[batch["inputs"]],
            targets_local=local[batch["targets"]],
        )
        return batch
