"""What serving a model costs: its target parameters and users/s of recommending a top-10
to every test-split user (catalog encoding, user tower, scores, history masked, top-k).

Models are timed interleaved (a, b, a, b, ...) so that load from anything else on the
machine falls on all of them alike; the fastest repeat (load-robust) and the median are
reported. Every rank times its shard between barriers.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from distrec.data.collate import history_batch
from distrec.distributed.collectives import barrier
from distrec.eval.evaluate import eval_cases, history_mask
from distrec.models.io import UserQuery
from distrec.models.towers import id_table_key
from distrec.train.evaluation import Evaluator
from distrec.train.workspace import Workspace

TOP_K = 10


def target_parameters(model: nn.Module, target: str) -> int:
    """Parameters that score the target: all but other domains' ID tables and a frozen LM
    (which a cached model does not hold)."""
    own = id_table_key(target)
    lm = {id(p) for p in model.item_tower.lm.parameters()} if model.item_tower.lm else set()
    total = 0
    for name, p in model.named_parameters():
        other_table = ".ids." in name and f".ids.{own}." not in name
        if id(p) not in lm and not other_table:
            total += p.numel()
    return total


def serving_batches(ws: Workspace) -> tuple[int, list]:
    """(test users of the target, this rank's batches of (history, last) and seen-masks)."""
    d = ws.domains[ws.cfg.data.target]
    rank, world = ws.rank_world
    cases = eval_cases(d.sequences(), "test")
    mine, size = cases[rank::world], ws.cfg.eval.batch_size
    chunks = [mine[i : i + size] for i in range(0, len(mine), size)]
    batches = [
        (
            history_batch([c.history for c in chunk], ws.cfg.data.max_history),
            history_mask(chunk, d.num_items),
        )
        for chunk in chunks
    ]
    return len(cases), batches


@torch.no_grad()
def recommend_top(ws: Workspace, model: nn.Module, batches: list) -> None:
    """Each batch's top-k unseen items, as a serving call computes them (results dropped)."""
    d, device = ws.domains[ws.cfg.data.target], ws.device
    model.eval()
    with ws.accelerator.autocast():
        catalog = Evaluator(ws).catalog(model, d)
        for (history, last), seen in batches:
            query = UserQuery(d.name, history.to(device), last.to(device), catalog.vectors)
            scores = model.score(model(query), catalog)
            scores.masked_fill_(seen.to(device), float("-inf"))
            scores[:, 0] = float("-inf")
            scores.topk(TOP_K, dim=1)


def serving_costs(ws: Workspace, models: dict[str, nn.Module], repeats: int) -> dict[str, dict]:
    """name -> {params, users_per_s (fastest repeat), users_per_s_median}, timed interleaved."""
    users, batches = serving_batches(ws)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            barrier()
            start = time.perf_counter()
            recommend_top(ws, model, batches)
            barrier()
            speeds[name].append(users / (time.perf_counter() - start))
    target = ws.cfg.data.target
    return {
        name: {
            "params": float(target_parameters(models[name], target)),
            "users_per_s": max(speeds[name]),
            "users_per_s_median": statistics.median(speeds[name]),
        }
        for name in models
    }
