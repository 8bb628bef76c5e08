"""Evaluation throughput of distrec's own evaluation path: catalog items encoded/s (the LM over
the whole catalog in end-to-end mode, the projection of cached features in cached mode) and
users ranked/s under the full-catalog ranking protocol (README "Quality: how the results table
is made"; `distrec.train.evaluation.Evaluator`)."""

from __future__ import annotations

import statistics
import time

from distrec.train.evaluation import Evaluator
from distrec.train.workspace import Workspace
from perf.common import PeakMemory, load_average, sync


def time_catalog(ws: Workspace, model, domain: str, repeats: int) -> dict:
    """`Evaluator.catalog` as `Evaluator.ranks` calls it (eval mode, autocast), median of
    repeats."""
    evaluator, d = Evaluator(ws), ws.domains[domain]
    model.eval()
    times = []
    with PeakMemory() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            with ws.accelerator.autocast():
                evaluator.catalog(model, d)
            sync()
            times.append(time.perf_counter() - t0)
    model.train()
    t = statistics.median(times)
    return {
        "mode": ws.cfg.model.mode,
        "items": d.num_items,
        "repeats": repeats,
        "seconds": t,
        "items_per_s": d.num_items / t,
        "memory": mem.report(),
    }


def time_ranking(ws: Workspace, model, domain: str, catalog_s: float) -> dict:
    """Full-catalog ranking of the test users through `Evaluator.metrics`; the catalog's own
    time (measured separately) is subtracted, leaving user tower + scoring + metrics."""
    from distrec.eval.evaluate import eval_cases

    evaluator, d = Evaluator(ws), ws.domains[domain]
    users = len(eval_cases(d.sequences(), "test", ws.cfg.eval.max_users))
    evaluator.metrics(model, [domain], "test")  # warm-up (and reads the sequences once)
    t0 = time.perf_counter()
    metrics = evaluator.metrics(model, [domain], "test")
    sync()
    seconds = time.perf_counter() - t0 - catalog_s
    return {
        "users": users,
        "catalog_items": d.num_items,
        "seconds_without_catalog": seconds,
        "users_ranked_per_s": users / seconds,
        "ndcg@10": metrics["ndcg@10"],
    }


def bench_eval(
    cached_ws: Workspace, cached_model, e2e_ws: Workspace, e2e_model, domain: str
) -> dict:
    """Catalog encoding in both modes and full ranking (cached model) on `domain`."""
    print(f"[perf] eval: catalog encoding and full ranking on {domain}")
    load_before = load_average()
    cached = time_catalog(cached_ws, cached_model, domain, repeats=5)
    e2e = time_catalog(e2e_ws, e2e_model, domain, repeats=1)
    ranking = time_ranking(cached_ws, cached_model, domain, cached["seconds"])
    print(
        f"[perf] eval: end-to-end catalog {e2e['items_per_s']:.0f} items/s, cached catalog "
        f"{cached['items_per_s']:.0f} items/s, {ranking['users_ranked_per_s']:.0f} users ranked/s"
    )
    return {
        "benchmark": "eval",
        "domain": domain,
        "catalog_end_to_end": e2e,
        "catalog_cached": cached,
        "ranking": ranking,
        "notes": (
            "users ranked/s is measured with the cached-mode model: once the catalog table "
            "exists, ranking (user tower over the history + scores against every item + "
            "metrics) is the same computation in both modes."
        ),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
