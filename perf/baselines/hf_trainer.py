"""The baselines: the same two-tower model fine-tuned with `transformers.Trainer` + PEFT, the way
a user writes it without distrec. Two of them, sharing everything but two pieces:

- per example (`dedup=False`): a Dataset with one example per user carrying every history
  item's tokens, a collator that pads them, and a forward that encodes every history item of
  every example through the LM (no deduplication across the batch, no feature cache);
- de-duplicated (`dedup=True`): what a careful user writes in a few more lines: the collator
  sends each distinct item's tokens once (padded to the longest distinct text, one LM call, no
  length buckets) and the forward encodes them once and gathers them back by
  `torch.unique(..., return_inverse=True)`. distrec's remaining edge over it is its own
  execution (length buckets, loader, fused loss), not the deduplication.

What is deliberately the same as distrec: the model (built by the same functions, so the same
LoRA targets and trainable parameters), the batch (the examples are the rows distrec's loader
produced, in the same order), the precision, the optimizer (AdamW, cosine schedule, clipping)
and the loss (softmax over the batch's distinct items with the same popularity bias and logQ
correction). What differs is only how a step is executed.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from distrec.heads.retrieval import inclusion_log_prob, item_slots, retrieval_loss
from distrec.models.io import ItemBatch, TrainOutputs
from distrec.models.packing import Packing
from distrec.train.trainer import StagePlan, build_loader
from distrec.train.workspace import Workspace
from perf.common import PeakMemory, load_average, median_windows, sync


def history_examples(batches: list[dict], tokens, domain: str) -> list[dict]:
    """One example per user row of distrec's batches: its item sequence and each item's tokens
    (duplicates across examples are kept: every example carries its whole history)."""
    out = []
    for b in batches:
        for row in range(b["inputs"].shape[0]):
            valid = bool(b["valid"][row])
            n = int((b["targets"][row] > 0).sum()) if valid else 0
            # Rows with nothing to predict stay (as empty examples) so that Trainer's
            # batches are exactly distrec's batches.
            items = [int(b["inputs"][row, 0]), *b["targets"][row, :n].tolist()] if n else []
            toks = [tokens.input_ids[i, : int(tokens.lengths[i])].tolist() for i in items]
            out.append({"item_ids": items, "tokens": toks, "domain": domain, "valid": valid})
    return out


def padded_item_ids(examples: list[dict]) -> torch.Tensor:
    """[B, L] each example's item sequence, right-padded with 0 to the batch's longest."""
    length = max([1, *(len(e["item_ids"]) for e in examples)])
    item_ids = torch.zeros(len(examples), length, dtype=torch.long)
    for r, e in enumerate(examples):
        if e["item_ids"]:
            item_ids[r, : len(e["item_ids"])] = torch.tensor(e["item_ids"])
    return item_ids


class HistoryCollator:
    """Pads histories to the batch's longest and item texts to the batch's longest text:
    input_ids / attention_mask [B, L, W], one row of tokens per history position."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict:
        item_ids = padded_item_ids(examples)
        width = max([1, *(len(t) for e in examples for t in e["tokens"])])
        input_ids = torch.full((*item_ids.shape, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(*item_ids.shape, width, dtype=torch.long)
        for r, e in enumerate(examples):
            for c, t in enumerate(e["tokens"]):
                input_ids[r, c, : len(t)] = torch.tensor(t)
                mask[r, c, : len(t)] = 1
        return {"item_ids": item_ids, "input_ids": input_ids, "attention_mask": mask}


class DistinctItemsCollator(HistoryCollator):
    """The careful user's collator: each distinct item of the batch sends its tokens once,
    input_ids / attention_mask [U, W] in ascending item id (torch.unique's order), W the
    longest distinct text."""

    def __call__(self, examples: list[dict]) -> dict:
        texts: dict[int, list[int]] = {}
        for e in examples:
            for item, t in zip(e["item_ids"], e["tokens"], strict=True):
                texts.setdefault(item, t)
        width = max([1, *(len(t) for t in texts.values())])
        input_ids = torch.full((len(texts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for r, item in enumerate(sorted(texts)):
            input_ids[r, : len(texts[item])] = torch.tensor(texts[item])
            mask[r, : len(texts[item])] = 1
        return {
            "item_ids": padded_item_ids(examples),
            "input_ids": input_ids,
            "attention_mask": mask,
        }


class TwoTowerForTrainer(nn.Module):
    """The recommender's towers behind a forward that returns {"loss"} as Trainer expects;
    `dedup`: encode each distinct item of the batch once (tokens from DistinctItemsCollator)
    instead of every history item of every example (HistoryCollator)."""

    def __init__(self, peft_model: nn.Module, domain, logq: bool, dedup: bool = False) -> None:
        super().__init__()
        self.dedup = dedup
        self.model = peft_model
        self.rec = peft_model.base_model.model  # the Recommender, LoRA layers injected
        # A hand-written forward encodes all texts in one call, padded to the batch's
        # longest (what its collator made); length groups and packing are distrec's.
        self.rec.item_tower.length_buckets = 1
        self.rec.item_tower.packing = Packing("off")
        self.domain = domain.name
        self.register_buffer("popularity", domain.popularity, persistent=False)
        self.register_buffer("share", domain.share, persistent=False)
        self.logq = logq
        self.config = self.rec.config
        self.losses: list[torch.Tensor] = []
        self.items_encoded: list[int] = []  # LM rows per step

    def encode(self, items: torch.Tensor, input_ids, attention_mask) -> torch.Tensor:
        """[N, d] unit item vectors of `items` [N] from their tokens [N, W] (one LM call)."""
        self.items_encoded.append(items.numel())
        batch = ItemBatch(self.domain, items, input_ids=input_ids, attention_mask=attention_mask)
        return self.rec._unit(self.rec.item_tower(batch))

    def item_vectors(self, item_ids, input_ids, attention_mask):
        """(vecs [n] per real history position, distinct ids [U], their vectors [U, d])."""
        real = item_ids > 0
        flat = item_ids[real]
        uniq, inverse = torch.unique(flat, return_inverse=True)
        if self.dedup:
            # The collator sent each distinct item's tokens once, in ascending id = uniq.
            cand = self.encode(uniq, input_ids, attention_mask)
            return cand[inverse], uniq, cand
        # Every history item of every example goes through the LM, duplicates included;
        # each distinct item is represented among the negatives by its first encoding.
        vecs = self.encode(flat, input_ids[real], attention_mask[real])
        first = torch.full((uniq.numel(),), flat.numel(), device=flat.device)
        first = first.scatter_reduce(
            0, inverse, torch.arange(flat.numel(), device=flat.device), "amin"
        )
        return vecs, uniq, vecs[first]

    def forward(self, item_ids, input_ids, attention_mask):
        """{"loss"} of a collated batch: the same retrieval loss as distrec's."""
        real = item_ids > 0
        vecs, uniq, cand = self.item_vectors(item_ids, input_ids, attention_mask)
        table = vecs.new_zeros(*item_ids.shape, vecs.shape[-1])
        table[real] = vecs
        targets = item_ids[:, 1:]
        has_target = targets > 0
        inputs = table[:, :-1] * has_target[..., None].to(table.dtype)
        users = self.rec._unit(self.rec.user_tower(inputs, self.domain))[has_target]
        # Negatives: the batch's distinct items.
        bias = self.rec._bias(self.popularity[uniq], cand)
        out = TrainOutputs(
            users=users,
            targets=torch.searchsorted(uniq, targets[has_target]),
            candidates=cand,
            candidate_items=uniq,
            bias=bias,
            scale=self.rec.scale(),
        )
        slots = item_slots(item_ids[:, :-1], targets)
        log_q = inclusion_log_prob(self.share[uniq], slots) if self.logq else None
        loss = retrieval_loss(out, log_q)
        self.losses.append(loss.detach())
        return {"loss": loss}


class StepClock(TrainerCallback):
    """The time at the end of every Trainer step."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        """Note the time once the step's work has finished."""
        sync()
        self.marks.append(time.perf_counter())


BASELINES = {
    False: ("hf_trainer", "transformers.Trainer + peft.get_peft_model, per-example encoding"),
    True: (
        "hf_trainer_dedup",
        "transformers.Trainer + peft.get_peft_model, the batch's distinct items encoded once "
        "(torch.unique in forward; the collator sends each distinct item's tokens once, padded "
        "to the longest, one LM call)",
    ),
}


def train_with_trainer(
    ws: Workspace, peft_model, examples: list[dict], steps: int, work: Path, dedup: bool = False
) -> tuple[TwoTowerForTrainer, StepClock, PeakMemory]:
    """Fine-tune with HF Trainer over `examples` in order; returns (model wrapper, clock, memory).
    `dedup`: the de-duplicating baseline (its collator and forward)."""
    cfg = ws.cfg
    domain = ws.domains[examples[0]["domain"]]
    model = TwoTowerForTrainer(peft_model, domain, cfg.model.logq_correction, dedup=dedup)
    args = TrainingArguments(
        output_dir=str(work / BASELINES[dedup][0]),
        per_device_train_batch_size=cfg.train.batch_size,
        max_steps=steps,
        learning_rate=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=int(cfg.train.warmup_ratio * steps),
        max_grad_norm=cfg.train.max_grad_norm or 0.0,
        optim="adamw_torch",
        bf16=ws.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=cfg.data.num_workers,
        # distrec's loader already shuffled these rows: keep its order (the same batches).
        train_sampling_strategy="sequential",
        remove_unused_columns=False,
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=cfg.seed,
    )
    clock = StepClock()
    collator = DistinctItemsCollator if dedup else HistoryCollator
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=collator(ws.text.tokenizer.pad_token_id),
        callbacks=[clock],
    )
    with PeakMemory() as mem:
        trainer.train()
    return model, clock, mem


def distrec_batches(ws: Workspace, plan: StagePlan, count: int) -> list[dict]:
    """The first `count` batches distrec's own loader yields for `plan` (fresh loader)."""
    loader = build_loader(ws, plan, with_tokens=True)
    it = iter(loader)
    out = [next(it) for _ in range(count)]
    del it
    return out


def baseline_windows(
    examples: list[dict], marks: list[float], items: list[int], steps: tuple[int, int, int]
) -> list[dict]:
    """Each measured window's users/s and items encoded/s (`items`: LM rows per step)."""
    warmup, windows, per_window = steps
    bs = len(examples) // len(items)
    rows = []
    for w in range(windows):
        first, last = warmup + w * per_window, warmup + (w + 1) * per_window - 1
        seconds = marks[last] - marks[first - 1]
        users = sum(e["valid"] for e in examples[first * bs : (last + 1) * bs])
        rows.append(
            {
                "seconds": seconds,
                "users_per_s": users / seconds,
                "items_encoded_per_s": sum(items[first : last + 1]) / seconds,
            }
        )
    return rows


def bench_baseline(
    ws: Workspace,
    peft_model,
    plan: StagePlan,
    steps: tuple[int, int, int],
    work: Path,
    dedup: bool = False,
) -> dict:
    """Users/s of a Trainer baseline (median over windows, warm-up dropped); `dedup`: the
    de-duplicating one."""
    warmup, windows, per_window = steps
    total = warmup + windows * per_window
    source = next(iter(plan.train_domains))
    batches = distrec_batches(ws, plan, total)
    examples = history_examples(batches, ws.domains[source].tokens, source)
    name, implementation = BASELINES[dedup]
    print(f"[perf] baseline ({name}): {warmup} warm-up + {windows}x{per_window} steps")
    load_before = load_average()
    model, clock, mem = train_with_trainer(ws, peft_model, examples, total, work, dedup)
    rows = baseline_windows(examples, clock.marks, model.items_encoded, steps)
    result = {
        "implementation": implementation,
        "dedup": dedup,
        "steps": {"warmup": warmup, "windows": windows, "per_window": per_window},
        "median": {
            k: median_windows([r[k] for r in rows])["median"]
            for k in ("users_per_s", "items_encoded_per_s")
        },
        "best_window": max(rows, key=lambda r: r["users_per_s"]),
        "windows": rows,
        # Per example (user row), as distrec's: LM rows over the batch's rows.
        "items_encoded_per_user": sum(model.items_encoded) / len(examples),
        "memory": mem.report(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    print(f"[perf] baseline ({name}): {result['median']['users_per_s']:.2f} users/s")
    return result


# The equal-loss check: with every source of randomness off (dropouts) and fp32, both
# pipelines compute the same function of the same weights on the same batches, so their
# losses agree up to float reassociation (the LM sees differently shaped matmuls: each
# item once vs every occurrence), which AdamW then carries forward; 1e-4 relative bounds it.
EQUAL_LOSS_OVERRIDES = [
    "train.precision=fp32",
    "train.weight_decay=0.0",
    "train.warmup_ratio=0.0",
    "peft.dropout=0.0",
    "model.id_dropout=0.0",
    "model.user_tower.dropout=0.0",
    "data.num_workers=0",
]
EQUAL_LOSS_RTOL = 1e-4


def loss_agreement(reference: list[float], losses: list[float]) -> dict:
    """How closely `losses` follow `reference` step by step (absolute and relative)."""
    diffs = [abs(a - b) for a, b in zip(reference, losses, strict=True)]
    rel = max(d / max(abs(a), 1e-12) for d, a in zip(diffs, reference, strict=True))
    return {
        "trainer_losses": losses,
        "max_abs_diff": max(diffs),
        "max_rel_diff": rel,
        "losses_match": rel <= EQUAL_LOSS_RTOL,
    }


def equal_loss_check(steps: int, work: Path) -> dict:
    """Same init, same batches, same steps on the tiny case: distrec's trainer vs each Trainer
    baseline (per example and de-duplicated); the top-level verdict covers both."""
    from perf.bench_train import distrec_step_losses, end_to_end_model, train_plan
    from perf.common import build_run
    from perf.workloads import quick_workload

    w = quick_workload(work, EQUAL_LOSS_OVERRIDES)
    ws = build_run(w.config, work / "run", [w.source])
    plan = train_plan(ws, w.source)
    ours = end_to_end_model(ws, ws.text.lm)  # each gets its own copy of the LM
    init = copy.deepcopy(ours.state_dict())
    print(f"[perf] equal-loss check: {steps} steps each, tiny case, fp32, dropout off")
    examples = history_examples(
        distrec_batches(ws, plan, steps), ws.domains[w.source].tokens, w.source
    )
    per_baseline = {}
    for dedup, (name, _) in BASELINES.items():
        theirs = end_to_end_model(ws, ws.text.lm)
        theirs.load_state_dict(init)
        wrapper, _, _ = train_with_trainer(ws, theirs, examples, steps, work, dedup)
        per_baseline[name] = [float(x) for x in wrapper.losses]
    distrec_losses = distrec_step_losses(ws, ours, plan, steps)
    agreement = {k: loss_agreement(distrec_losses, v) for k, v in per_baseline.items()}
    return {
        "benchmark": "baseline_equal_loss",
        "config": {
            "steps": steps,
            "overrides": EQUAL_LOSS_OVERRIDES,
            "run_config": w.config.model_dump(mode="json"),
        },
        "distrec_losses": distrec_losses,
        # The per-example baseline's losses, where earlier versions of this file kept them.
        "trainer_losses": per_baseline["hf_trainer"],
        "max_abs_diff": max(a["max_abs_diff"] for a in agreement.values()),
        "max_rel_diff": max(a["max_rel_diff"] for a in agreement.values()),
        "rtol": EQUAL_LOSS_RTOL,
        "losses_match": all(a["losses_match"] for a in agreement.values()),
        "per_baseline": agreement,
        "why_not_bitwise": (
            "the LM runs different matmul shapes (each distinct item once vs every occurrence), "
            "so float sums are reassociated; gradients of the shared encodings are summed in a "
            "different order. Equality holds to float rounding, carried through AdamW."
        ),
    }


def main(argv: list[str] | None = None) -> None:
    """`--equal-loss`: run the equal-loss check and write its JSON to --out."""
    import argparse
    import tempfile

    from perf.common import write_result

    p = argparse.ArgumentParser(prog="python -m perf.baselines.hf_trainer")
    p.add_argument("--equal-loss", action="store_true", required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="distrec-equal-loss-") as work:
        result = equal_loss_check(args.steps, Path(work))
    verdict = "match" if result["losses_match"] else "DIFFER"
    print(f"[perf] equal-loss: {verdict} (max rel diff {result['max_rel_diff']:.2e})")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
