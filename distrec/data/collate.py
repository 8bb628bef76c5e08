"""Turn user sequences into padded next-item-prediction tensors."""

from __future__ import annotations

from typing import TypedDict

import torch


class StreamBatch(TypedDict, total=False):
    """A training batch as the stream yields it (CPU tensors).

    domain: the domain it came from; inputs, targets: [B, T] catalog indices (0 = padding);
    users, valid: [B]; target_ratings, input_ratings: [B, T] when the log has ratings. End to end the
    worker adds items: [U] the batch's distinct items, input_ids, attention_mask: [U, L]
    their tokens, inputs_local, targets_local: [B, T] indices into [pad] + items.
    """

    domain: str
    inputs: torch.Tensor
    targets: torch.Tensor
    users: torch.Tensor
    valid: torch.Tensor
    target_ratings: torch.Tensor
    input_ratings: torch.Tensor
    items: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    inputs_local: torch.Tensor
    targets_local: torch.Tensor


def collate_sequences(samples: list[dict], max_history: int) -> dict:
    """Right-padded `inputs`/`targets` [B, L] (0 = padding), `users` [B], `valid` [B].

    Right padding keeps every real position's causal attention over real items
    only, so no row is ever fully masked (a NaN source with left padding).
    """
    length = max(1, min(max_history, max((len(s["items"]) - 1 for s in samples), default=1)))
    inputs = torch.zeros(len(samples), length, dtype=torch.long)
    targets = torch.zeros(len(samples), length, dtype=torch.long)
    for row, s in enumerate(samples):
        items = s["items"][-(length + 1) :]
        n = len(items) - 1
        if n > 0:
            inputs[row, :n] = torch.tensor(items[:-1])
            targets[row, :n] = torch.tensor(items[1:])
    batch = {
        "inputs": inputs,
        "targets": targets,
        "users": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "valid": torch.ones(len(samples), dtype=torch.bool),
    }
    if samples and all("ratings" in s for s in samples):
        targets_r = torch.zeros(len(samples), length)
        inputs_r = torch.zeros(len(samples), length)
        for row, s in enumerate(samples):
            r = torch.tensor(s["ratings"][-(length + 1) :], dtype=torch.float32)
            targets_r[row, : len(r) - 1] = r[1:]
            inputs_r[row, : len(r) - 1] = r[:-1]
        batch["target_ratings"] = targets_r
        batch["input_ratings"] = inputs_r
    return batch


def history_batch(
    histories: list[list[int]], max_history: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded histories [B, L] and the index of each row's last real position."""
    length = max(1, min(max_history, max((len(h) for h in histories), default=1)))
    out = torch.zeros(len(histories), length, dtype=torch.long)
    last = torch.zeros(len(histories), dtype=torch.long)
    for row, h in enumerate(histories):
        h = h[-length:]
        if h:
            out[row, : len(h)] = torch.tensor(h)
        last[row] = max(0, len(h) - 1)
    return out, last
