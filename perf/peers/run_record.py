"""What a RecBole peer run writes: ranks.parquet under distrec's schema and run.json
(metrics, stopping reason, curve, hyper-parameters, recovery notes)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from perf.peers.recbole_training import EpochClock, Training


@dataclass(frozen=True)
class Evaluation:
    """The best checkpoint's ranks and metrics: ours (the protocol) and RecBole's own."""

    best_epoch: int
    ranks: dict[str, torch.Tensor]
    protocol: dict[str, dict]
    recbole: dict[str, dict]


HYPER_PARAMETERS = (
    "learning_rate",
    "train_batch_size",
    "eval_batch_size",
    "learner",
    "weight_decay",
    "embedding_size",
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "num_layers",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "dropout_prob",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
    "loss_type",
    "train_neg_sample_args",
    "MAX_ITEM_LIST_LENGTH",
    "epochs",
    "stopping_step",
    "eval_step",
    "valid_metric",
    "clip_grad_norm",
)


def stage_name(model: str) -> str:
    """The stage column of ranks.parquet and peers tables, e.g. recbole_sasrec."""
    return f"recbole_{model.lower()}"


def write_ranks(path: Path, stage: str, domain: str, cases: dict, ranks: dict) -> None:
    """ranks.parquet with the same columns as distrec's own."""
    rows = [
        pd.DataFrame(
            {
                "stage": stage,
                "split": s,
                "domain": domain,
                "user": np.array([u for u, _ in cases[s]], dtype=np.int64),
                "rank": r.numpy().astype(np.float64),
            }
        )
        for s, r in ranks.items()
    ]
    pd.concat(rows, ignore_index=True).to_parquet(path, index=False)


def hyper_parameters(config) -> dict:
    """The model's and trainer's settings RecBole resolved (its defaults, our overrides)."""
    return {
        k: config[k]
        for k in HYPER_PARAMETERS
        if config[k] is not None or k in config.final_config_dict
    }


def recovered_note(args: argparse.Namespace, training: Training) -> dict | None:
    """run.json's `recovered` entry: None unless --recover."""
    if not args.recover:
        return None
    return {
        "checkpoint": str(training.checkpoint),
        "log": args.recover[1],
        "why": args.recover_note or "stopped from outside at a deadline",
        "note": "best checkpoint of the stopped run, tested here; curve parsed from its "
        "log (elapsed rounded to seconds, valid NDCG@10 to 5 decimals)",
    }


def run_record(
    args: argparse.Namespace,
    split: dict,
    *,
    config,
    clock: EpochClock,
    training: Training,
    evaluation: Evaluation,
) -> dict:
    """run.json's content."""
    import recbole

    curve = clock.curve
    best_ndcg = max((c["valid_ndcg@10"] for c in curve), default=float("nan"))
    first_best = next((c for c in curve if c["valid_ndcg@10"] == best_ndcg), None)
    return {
        "model": args.model,
        "stage": stage_name(args.model),
        "domain": split["domain"],
        "recbole_version": recbole.__version__,
        "torch_version": torch.__version__,
        "dataset": split["dataset"],
        "fingerprint": split.get("fingerprint"),
        "hyper_parameters": _jsonable(hyper_parameters(config)),
        "seed": args.seed,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "max_minutes": clock.cap_min,
        "epochs_run": len(curve),
        "best_epoch": evaluation.best_epoch,
        "stopping_reason": training.reason,
        "capped": training.reason == "capped",
        "wall_s": round(training.wall_s, 3),
        "best_valid_ndcg@10": best_ndcg,
        "first_best_elapsed_s": first_best["elapsed_s"] if first_best else None,
        "protocol_metrics": evaluation.protocol,
        "recbole_metrics": evaluation.recbole,
        "recbole_metrics_note": (
            "RecBole's own evaluator, reference only: it does not mask history for "
            "sequential models and counts ties differently"
        ),
        "curve": curve,
        "split_check": "passed",
        "recovered": recovered_note(args, training),
        "protocol": "full catalog, history masked, target rankable, 0-based fractional ranks",
    }


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = str(v)
        if isinstance(v, float) and math.isnan(v):
            out[k] = None
    return out
