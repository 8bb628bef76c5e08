"""The baseline: the same two-tower model fine-tuned with `transformers.Trainer` + PEFT, the way
a user writes it without distrec: a Dataset with one example per user carrying every history
item's tokens, a collator that pads them, and a model whose forward encodes every history item
of every example through the LM (no deduplication across the batch, no feature cache).

What is deliberately the same as distrec: the model (built by the same functions, so the same
LoRA targets and trainable parameters), the batch (the examples are the rows distrec's loader
produced, in the same order), the precision, the optimizer (AdamW, cosine schedule, clipping)
and the loss (softmax over the batch's distinct items with the same popularity bias and logQ
correction). What differs is only how a step is executed.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from distrec.heads.retrieval import inclusion_log_prob, item_slots, retrieval_loss
from distrec.models.io import ItemBatch, TrainOutputs
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


class HistoryCollator:
    """Pads histories to the batch's longest and item texts to the batch's longest text."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict:
        length = max([1, *(len(e["item_ids"]) for e in examples)])
        width = max([1, *(len(t) for e in examples for t in e["tokens"])])
        item_ids = torch.zeros(len(examples), length, dtype=torch.long)
        input_ids = torch.full((len(examples), length, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(examples), length, width, dtype=torch.long)
        for r, e in enumerate(examples):
            if e["item_ids"]:
                item_ids[r, : len(e["item_ids"])] = torch.tensor(e["item_ids"])
            for c, t in enumerate(e["tokens"]):
                input_ids[r, c, : len(t)] = torch.tensor(t)
                mask[r, c, : len(t)] = 1
        return {"item_ids": item_ids, "input_ids": input_ids, "attention_mask": mask}


class TwoTowerForTrainer(nn.Module):
    """The recommender's towers behind a forward that returns {"loss"} as Trainer expects."""

    def __init__(self, peft_model: nn.Module, domain, logq: bool) -> None:
        super().__init__()
        self.model = peft_model
        self.rec = peft_model.base_model.model  # the Recommender, LoRA layers injected
        # A hand-written forward encodes all texts in one call, padded to the batch's
        # longest (what its collator made); length groups are distrec's.
        self.rec.item_tower.length_buckets = 1
        self.domain = domain.name
        self.register_buffer("popularity", domain.popularity, persistent=False)
        self.register_buffer("share", domain.share, persistent=False)
        self.logq = logq
        self.config = self.rec.config
        self.losses: list[torch.Tensor] = []

    def forward(self, item_ids, input_ids, attention_mask):
        """{"loss"} of a collated batch: every history item encoded, the same retrieval loss."""
        real = item_ids > 0
        # Every history item of every example goes through the LM, duplicates included.
        items = ItemBatch(
            self.domain,
            item_ids[real],
            input_ids=input_ids[real],
            attention_mask=attention_mask[real],
        )
        vecs = self.rec._unit(self.rec.item_tower(items))
        table = vecs.new_zeros(*item_ids.shape, vecs.shape[-1])
        table[real] = vecs
        targets = item_ids[:, 1:]
        has_target = targets > 0
        inputs = table[:, :-1] * has_target[..., None].to(table.dtype)
        users = self.rec._unit(self.rec.user_tower(inputs, self.domain))[has_target]
        # Negatives: the batch's distinct items (each represented by its first encoding).
        flat = item_ids[real]
        uniq, inverse = torch.unique(flat, return_inverse=True)
        first = torch.full((uniq.numel(),), flat.numel(), device=flat.device)
        first = first.scatter_reduce(
            0, inverse, torch.arange(flat.numel(), device=flat.device), "amin"
        )
        cand = vecs[first]
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


def train_with_trainer(
    ws: Workspace, peft_model, examples: list[dict], steps: int, work: Path
) -> tuple[TwoTowerForTrainer, StepClock, PeakMemory]:
    """Fine-tune with HF Trainer over `examples` in order; returns (model wrapper, clock, memory)."""
    cfg = ws.cfg
    domain = ws.domains[examples[0]["domain"]]
    model = TwoTowerForTrainer(peft_model, domain, cfg.model.logq_correction)
    args = TrainingArguments(
        output_dir=str(work / "hf_trainer"),
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
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=HistoryCollator(ws.text.tokenizer.pad_token_id),
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


def bench_baseline(
    ws: Workspace, peft_model, plan: StagePlan, steps: tuple[int, int, int], work: Path
) -> dict:
    """Users/s of the Trainer baseline (median over windows, warm-up dropped)."""
    warmup, windows, per_window = steps
    total = warmup + windows * per_window
    source = next(iter(plan.train_domains))
    batches = distrec_batches(ws, plan, total)
    examples = history_examples(batches, ws.domains[source].tokens, source)
    print(f"[perf] baseline (HF Trainer + PEFT): {warmup} warm-up + {windows}x{per_window} steps")
    load_before = load_average()
    _, clock, mem = train_with_trainer(ws, peft_model, examples, total, work)
    bs = ws.cfg.train.batch_size
    per_step_items = [len(e["item_ids"]) for e in examples]
    rows = []
    for w in range(windows):
        first, last = warmup + w * per_window, warmup + (w + 1) * per_window - 1
        seconds = clock.marks[last] - clock.marks[first - 1]
        users = sum(e["valid"] for e in examples[first * bs : (last + 1) * bs])
        items = sum(per_step_items[first * bs : (last + 1) * bs])
        rows.append(
            {
                "seconds": seconds,
                "users_per_s": users / seconds,
                "items_encoded_per_s": items / seconds,
            }
        )
    result = {
        "implementation": "transformers.Trainer + peft.get_peft_model, per-example encoding",
        "steps": {"warmup": warmup, "windows": windows, "per_window": per_window},
        "median": {
            k: median_windows([r[k] for r in rows])["median"]
            for k in ("users_per_s", "items_encoded_per_s")
        },
        "best_window": max(rows, key=lambda r: r["users_per_s"]),
        "windows": rows,
        "items_encoded_per_user": sum(per_step_items) / len(per_step_items),
        "memory": mem.report(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    print(f"[perf] baseline: {result['median']['users_per_s']:.2f} users/s")
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


def equal_loss_check(steps: int, work: Path) -> dict:
    """Same init, same batches, same steps on the tiny case: distrec's trainer vs Trainer."""
    from perf.bench_train import distrec_step_losses, end_to_end_model, train_plan
    from perf.common import build_run
    from perf.workloads import quick_workload

    w = quick_workload(work, EQUAL_LOSS_OVERRIDES)
    ws = build_run(w.config, work / "run", [w.source])
    plan = train_plan(ws, w.source)
    ours = end_to_end_model(ws, ws.text.lm)  # each gets its own copy of the LM
    theirs = end_to_end_model(ws, ws.text.lm)
    theirs.load_state_dict(ours.state_dict())
    print(f"[perf] equal-loss check: {steps} steps each, tiny case, fp32, dropout off")
    examples = history_examples(
        distrec_batches(ws, plan, steps), ws.domains[w.source].tokens, w.source
    )
    wrapper, _, _ = train_with_trainer(ws, theirs, examples, steps, work)
    trainer_losses = [float(x) for x in wrapper.losses]
    distrec_losses = distrec_step_losses(ws, ours, plan, steps)
    diffs = [abs(a - b) for a, b in zip(distrec_losses, trainer_losses, strict=True)]
    rel = max(d / max(abs(a), 1e-12) for d, a in zip(diffs, distrec_losses, strict=True))
    return {
        "benchmark": "baseline_equal_loss",
        "config": {
            "steps": steps,
            "overrides": EQUAL_LOSS_OVERRIDES,
            "run_config": w.config.model_dump(mode="json"),
        },
        "distrec_losses": distrec_losses,
        "trainer_losses": trainer_losses,
        "max_abs_diff": max(diffs),
        "max_rel_diff": rel,
        "rtol": EQUAL_LOSS_RTOL,
        "losses_match": rel <= EQUAL_LOSS_RTOL,
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
