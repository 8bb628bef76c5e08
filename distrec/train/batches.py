"""From the stream's batches (dicts of CPU tensors) to the model's typed requests."""

from __future__ import annotations

import torch

from distrec.data.collate import StreamBatch
from distrec.models.io import ItemBatch, RatingTotals, TrainBatch
from distrec.train.domains import DomainData
from distrec.train.sampling import sampled_windows


def train_batch(
    batch: StreamBatch,
    d: DomainData,
    device: torch.device,
    reads_text: bool,
    negatives: torch.Tensor | None = None,
) -> TrainBatch:
    """The model's input for one stream batch of domain `d`.

    End to end, the stream's worker already tokenized the batch's distinct items
    (`items`, `input_ids`) and re-indexed the windows into them (`*_local`): those items
    are the candidates. With sampled `negatives` (train.loss, distrec.train.sampling) the
    candidates are the batch's items and those negatives. Otherwise the whole catalog is
    (with its cached features when the model reads text).
    """
    ratings, input_ratings = batch.get("target_ratings"), batch.get("input_ratings")
    ratings = ratings.to(device) if ratings is not None else None
    input_ratings = input_ratings.to(device) if input_ratings is not None else None
    if is_sampled(batch):
        items = ItemBatch(
            d.name,
            batch["items"].to(device),
            popularity=d.popularity[batch["items"]].to(device),
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
        )
        inputs, targets = batch["inputs_local"], batch["targets_local"]
    elif negatives is not None:
        windows = sampled_windows(batch["inputs"], batch["targets"], negatives)
        items = catalog_items(d, windows.items, device, reads_text)
        inputs, targets = windows.inputs, windows.targets
    else:
        items = catalog_items(d, torch.arange(1, d.num_items + 1), device, reads_text)
        inputs, targets = batch["inputs"], batch["targets"]
    return TrainBatch(
        inputs.to(device),
        targets.to(device),
        batch["valid"].to(device),
        items,
        ratings,
        input_ratings,
        candidate_totals(d, items.items.cpu(), device),
    )


def catalog_items(
    d: DomainData, items: torch.Tensor, device: torch.device, reads_text: bool
) -> ItemBatch:
    """Catalog items `items` [C] as cached mode's item tower reads them (features or IDs)."""
    return ItemBatch(
        d.name,
        items.to(device),
        popularity=d.popularity[items].to(device),
        features=d.features[items].to(device) if reads_text else None,
    )


def candidate_totals(
    d: DomainData, items: torch.Tensor, device: torch.device
) -> RatingTotals | None:
    """The training rating totals of `items` (None when the domain has no ratings)."""
    totals = d.rating_totals
    if totals is None:
        return None
    return RatingTotals(totals.sum[items].to(device), totals.count[items].to(device))


def is_sampled(batch: StreamBatch) -> bool:
    """Whether the batch's candidates are its own items (end to end) rather than the catalog."""
    return "items" in batch
