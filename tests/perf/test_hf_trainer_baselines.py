"""The two HF Trainer baselines compute distrec's loss: the de-duplicating one encodes each
distinct item of a batch once, the per-example one every history item, and in fp32 with
dropout off both give the same loss on the same batch from the same weights."""

from __future__ import annotations

import pytest
import torch

from perf.baselines.hf_trainer import (
    EQUAL_LOSS_OVERRIDES,
    DistinctItemsCollator,
    HistoryCollator,
    TwoTowerForTrainer,
    distrec_batches,
    history_examples,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from perf.bench_train import end_to_end_model, train_plan
    from perf.common import build_run
    from perf.workloads import quick_workload

    work = tmp_path_factory.mktemp("baselines")
    w = quick_workload(work, EQUAL_LOSS_OVERRIDES)
    ws = build_run(w.config, work / "run", [w.source])
    batches = distrec_batches(ws, train_plan(ws, w.source), 2)
    examples = history_examples(batches, ws.domains[w.source].tokens, w.source)
    per_example = end_to_end_model(ws, ws.text.lm)
    dedup = end_to_end_model(ws, ws.text.lm)
    dedup.load_state_dict(per_example.state_dict())
    return ws, w.source, examples, per_example, dedup


def _forward(ws, source: str, peft_model, examples: list[dict], dedup: bool):
    collator = (DistinctItemsCollator if dedup else HistoryCollator)(ws.text.tokenizer.pad_token_id)
    model = TwoTowerForTrainer(peft_model, ws.domains[source], True, dedup=dedup).eval()
    with torch.no_grad():
        loss = model(**collator(examples))["loss"]
    return float(loss), model.items_encoded[-1]


def test_distinct_items_collator_sends_each_item_once(tiny):
    ws, _, examples, _, _ = tiny
    batch = examples[: ws.cfg.train.batch_size]
    got = DistinctItemsCollator(ws.text.tokenizer.pad_token_id)(batch)
    distinct = sorted({i for e in batch for i in e["item_ids"]})
    assert got["input_ids"].shape[0] == len(distinct)
    width = max(len(t) for e in batch for t in e["tokens"])
    assert got["input_ids"].shape[1] == width == int(got["attention_mask"].sum(1).max())
    for e in batch:  # row r holds the tokens of the r-th smallest distinct id
        for item, tokens in zip(e["item_ids"], e["tokens"], strict=True):
            row = distinct.index(item)
            assert got["input_ids"][row, : len(tokens)].tolist() == tokens


def test_dedup_baseline_encodes_fewer_items_for_the_same_loss(tiny):
    ws, source, examples, per_example, dedup = tiny
    batch = examples[: ws.cfg.train.batch_size]
    loss_all, encoded_all = _forward(ws, source, per_example, batch, dedup=False)
    loss_once, encoded_once = _forward(ws, source, dedup, batch, dedup=True)
    assert encoded_all == sum(len(e["item_ids"]) for e in batch)
    assert encoded_once == len({i for e in batch for i in e["item_ids"]})
    assert encoded_once < encoded_all
    assert torch.isfinite(torch.tensor(loss_once))
    assert loss_once == pytest.approx(loss_all, rel=1e-5)
