"""How much of ML-100K's next item can source knowledge explain? Simple scorers, no training.

The zero-shot target (issue 4: zero-shot NDCG@10 >= 1.5x popularity on ML-100K) asks the
ML-1M-trained model to beat popularity by half on ML-100K's test items. This script measures,
under the same protocol as `distrec evaluate` (leave-one-out, full catalog, history masked),
what the ingredients of such a transfer are worth on their own:

- popularity: the target's training counts (the stage table's baseline);
- time-window popularity: counts within +-30 days of the user's last history item;
- ML-1M co-occurrence: item-item cosine over ML-1M users (items matched by title and year),
  summed over the user's last 5 items: the collaborative knowledge a source can carry;
- ML-100K co-occurrence: the same from the target's own training data (not zero-shot:
  the reference for what in-domain data gives);
- text similarity: all-MiniLM-L6-v2 cosine between each item and the user's recent items
  (weights 0.7^age over the last 20): knowledge from the LM alone.

Blends with popularity (z-scored scores, popularity + alpha x signal) pick alpha on the
validation split and report the test split at that alpha.

    python perf/transfer_ceiling.py --out perf/results/transfer_ceiling.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.common import ROOT, build_run, load_average, write_result

ALPHAS = (0.0, 0.1, 0.3, 0.5, 1.0)
WINDOW_DAYS = 30
LAST_ITEMS = 5
DECAY, DECAY_ITEMS = 0.7, 20


def training_part(sequences: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(items, timestamps) of every user's training interactions (all but the last two)."""
    items = np.concatenate([np.asarray(s["items"][:-2]) for s in sequences])
    stamps = np.concatenate([np.asarray(s["ts"][:-2], dtype=np.float64) for s in sequences])
    order = np.argsort(stamps, kind="stable")
    return items[order], stamps[order]


def cooccurrence_cosine(sequences: list[dict], num_items: int) -> np.ndarray:
    """[N+1, N+1] cosine of item co-occurrence over users' training items; diagonal 0."""
    counts = np.zeros((num_items + 1, num_items + 1), dtype=np.float32)
    for s in sequences:
        seen = np.unique(np.asarray(s["items"][:-2]))
        counts[np.ix_(seen, seen)] += 1.0
    np.fill_diagonal(counts, 0.0)
    degree = counts.sum(1) + 1.0
    return counts / np.sqrt(degree[:, None] * degree[None, :])


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardized over the real items 1..N (the padding column 0 is left out of the stats)."""
    return (x - x[1:].mean()) / (x[1:].std() + 1e-9)


def ndcg10(sequences, num_items: int, split: str, score_user) -> float:
    """Test/valid NDCG@10 of `score_user(sequence, history) -> [N+1]` under the eval protocol."""
    from distrec.eval.evaluate import Ranking, eval_cases, rank_cases
    from distrec.eval.metrics import metrics_from_ranks

    by_index = {s["index"]: s for s in sequences}
    cases = eval_cases(sequences, split)
    batch = 256
    calls = itertools.count()

    def score(history, last):
        start = next(calls) * batch
        rows = [score_user(by_index[c.user], c.history) for c in cases[start : start + batch]]
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(1, num_items + 1)

    ranks = rank_cases(cases, score, Ranking(num_items, max_history=1, batch_size=batch))
    return float(metrics_from_ranks(ranks, [10])["ndcg@10"])


def load(config: str):
    """The config and a built run (both domains prepared) for `config`."""
    from distrec.config import load_config
    from distrec.data.prepare import prepare_domains

    out = "/tmp/distrec-transfer-ceiling"
    cfg = load_config(ROOT / config, ["distributed.strategy=auto", f"output.dir={out}"])
    prepare_domains(cfg)
    return cfg, build_run(cfg, Path(out), [*cfg.data.sources, cfg.data.target])


@dataclass(frozen=True)
class TargetData:
    """The target domain's sequences and what the popularity scorers read of its training part."""

    sequences: list[dict]
    num_items: int
    items: np.ndarray  # training interactions' items, in time order
    stamps: np.ndarray  # their timestamps
    log_pop: np.ndarray  # [N+1] z-scored log training counts

    @classmethod
    def of(cls, sequences: list[dict], num_items: int) -> TargetData:
        """Training part and popularity of the target's sequences."""
        items, stamps = training_part(sequences)
        counts = np.bincount(items, minlength=num_items + 1)
        log_pop = zscore(np.log(counts + 1.0).astype(np.float32))
        return cls(sequences, num_items, items, stamps, log_pop)

    def ndcg10(self, split: str, score_user) -> float:
        """`ndcg10` of `score_user` on this target's `split`."""
        return ndcg10(self.sequences, self.num_items, split, score_user)

    def window_popularity(self, s: dict, history: list[int]) -> np.ndarray:
        """Training counts within +-WINDOW_DAYS of the user's last history item."""
        t = s["ts"][len(history) - 1]
        span = WINDOW_DAYS * 86400
        lo, hi = np.searchsorted(self.stamps, [t - span, t + span])
        return np.bincount(self.items[lo:hi], minlength=self.num_items + 1) + 1e-3 * self.log_pop


def source_cosine(source, target) -> np.ndarray:
    """Source co-occurrence cosine on target ids (items matched by id); 0 for unmatched items."""
    n = target.num_items
    src_index = dict(zip(source.catalog.item_id, source.catalog.item_index, strict=True))
    to_src = np.zeros(n + 1, dtype=np.int64)
    to_src[target.catalog.item_index.values] = [src_index.get(i, 0) for i in target.catalog.item_id]
    print(f"[ceiling] {int((to_src > 0).sum())} of {n} target items found in the source")
    cos = cooccurrence_cosine(source.sequences(), source.num_items)[np.ix_(to_src, to_src)]
    cos[to_src == 0] = 0.0
    cos[:, to_src == 0] = 0.0
    return cos


def recent_text_scorer(features: torch.Tensor):
    """Cosine of each item's text to the user's last DECAY_ITEMS items, weighted DECAY^age."""
    text = torch.nn.functional.normalize(features.float(), dim=-1).numpy()

    def recent_text(s, history):
        h = np.asarray(history[-DECAY_ITEMS:])
        w = DECAY ** np.arange(len(h))[::-1]
        return text @ (text[h] * w[:, None]).sum(0)

    return recent_text


def signals(source, target, data: TargetData) -> dict:
    """The transfer ingredients as scorers `(sequence, history) -> [N+1]`."""
    src_cos = source_cosine(source, target)
    own_cos = cooccurrence_cosine(data.sequences, data.num_items)
    return {
        "source_cooccurrence": lambda s, h: src_cos[h[-LAST_ITEMS:]].sum(0),
        "target_cooccurrence_in_domain": lambda s, h: own_cos[h[-LAST_ITEMS:]].sum(0),
        "text_similarity": recent_text_scorer(target.features),
    }


def popularity_results(data: TargetData) -> dict:
    """NDCG@10 of popularity (test and valid) and of time-window popularity (test)."""
    log_pop = data.log_pop
    return {
        "popularity": {
            "test": data.ndcg10("test", lambda s, h: log_pop),
            "valid": data.ndcg10("valid", lambda s, h: log_pop),
        },
        "time_window_popularity": {"test": data.ndcg10("test", data.window_popularity)},
    }


def signal_result(data: TargetData, name: str, signal) -> dict:
    """Test NDCG of the signal alone and blended with popularity at the best valid alpha."""
    log_pop = data.log_pop

    def blend(alpha: float):
        return lambda s, h: log_pop + alpha * zscore(signal(s, h))

    alone = data.ndcg10("test", signal)
    valid = {a: data.ndcg10("valid", blend(a)) for a in ALPHAS}
    best = max(valid, key=valid.get)
    blended = data.ndcg10("test", blend(best))
    print(f"[ceiling] {name}: alone {alone:.4f}, + popularity (alpha {best}) {blended:.4f}")
    return {
        "test": alone,
        "plus_popularity": {"alpha": best, "valid": valid[best], "test": blended},
    }


def add_ratios_to_popularity(results: dict) -> None:
    """Add each test NDCG over popularity's, in place."""
    pop = results["popularity"]["test"]
    for r in results.values():
        r["test_over_popularity"] = r["test"] / pop
        if "plus_popularity" in r:
            r["plus_popularity"]["test_over_popularity"] = r["plus_popularity"]["test"] / pop


def main(argv: list[str] | None = None) -> None:
    """Score every ingredient on the target and write the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--out", default="perf/results/transfer_ceiling.json")
    args = p.parse_args(argv)
    start_load = load_average()
    cfg, run = load(args.config)
    source, target = run.domains[cfg.data.sources[0]], run.domains[cfg.data.target]
    data = TargetData.of(target.sequences(), target.num_items)
    results = popularity_results(data)
    for name, signal in signals(source, target, data).items():
        results[name] = signal_result(data, name, signal)
    add_ratios_to_popularity(results)
    write_result(
        args.out,
        {
            "benchmark": "transfer_ceiling",
            "source": source.name,
            "target": target.name,
            "metric": "ndcg@10, leave-one-out, full catalog, history masked",
            "settings": {
                "alphas": ALPHAS,
                "window_days": WINDOW_DAYS,
                "last_items": LAST_ITEMS,
                "decay": DECAY,
                "decay_items": DECAY_ITEMS,
            },
            "results": results,
            "load_average_at_start": start_load,
        },
    )
    print(f"[ceiling] wrote {args.out}")


if __name__ == "__main__":
    main()
