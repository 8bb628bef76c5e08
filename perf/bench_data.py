"""Loader-only throughput: sequences/s and tokens/s with 0/1/2 workers.

Measured on the prepared ML-1M shards and on a synthetic domain ten times the
demo's data (ML-1M + ML-100K), written by `distrec data synth` through the same
writer. Writes JSON (and a PNG beside it).

    python -m perf.bench_data --out perf/results/bench_data.json

The suite (`python -m perf`) runs `loader_throughput` on its own workload's source domain.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distrec.config import load_config
from distrec.data.loader import StreamLoader
from distrec.data.manifest import load_manifest
from distrec.data.prepare import prepare_domains
from distrec.data.stream import StreamSpec
from distrec.data.synth import SynthSpec, synth_domain
from distrec.data.tokens import AttachTokens, TokenTable
from distrec.models.encoder import load_encoder
from distrec.utils.plotting import pyplot, save_figure
from perf.common import write_result


@dataclass(frozen=True)
class LoaderRun:
    """How the loader is driven while measured: users per batch, history cap, batch count."""

    batch_size: int
    batches: int
    max_history: int = 50


def measure(manifest, run: LoaderRun, *, workers: int, transform=None) -> dict:
    """Sequences, positions and tokens per second of `run.batches` batches after a warm-up."""
    spec = StreamSpec(
        batch_size=run.batch_size,
        max_history=run.max_history,
        num_workers=workers,
        shuffle_shards=4,
    )
    loader = StreamLoader(manifest, spec, transform=transform)
    it = iter(loader)
    next(it)  # warm-up: worker start and first window
    seqs = positions = tokens = 0
    start = time.perf_counter()
    for n, b in enumerate(it):
        seqs += int(b["valid"].sum())
        positions += int((b["targets"] > 0).sum())
        if "attention_mask" in b:
            tokens += int(b["attention_mask"].sum())
        if n + 1 >= run.batches:
            break
    elapsed = time.perf_counter() - start
    return {
        "workers": workers,
        "batches": n + 1,
        "seconds": elapsed,
        "sequences_per_s": seqs / elapsed,
        "positions_per_s": positions / elapsed,
        "tokens_per_s": tokens / elapsed if tokens else None,
    }


def mode_rows(
    name: str, manifest, tokens: AttachTokens, run: LoaderRun, *, workers: int
) -> Iterator[dict]:
    """One row per mode at this worker count: cached (ids only), then end-to-end (tokens)."""
    for mode, transform in (("cached", None), ("end_to_end", tokens)):
        r = measure(manifest, run, workers=workers, transform=transform)
        yield {"dataset": name, "mode": mode, **r}


def loader_throughput(
    name: str, manifest, tokens: AttachTokens, run: LoaderRun, *, workers: tuple[int, ...]
) -> list[dict]:
    """Loader-only rates for each worker count, without and with tokens attached."""
    rows = []
    for w in workers:
        for r in mode_rows(name, manifest, tokens, run, workers=w):
            rows.append(r)
            print(f"[perf] loader {name} {r['mode']} workers={w}: {r['sequences_per_s']:.0f} seq/s")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The standalone benchmark's command line."""
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="perf/results/bench_data.json")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--batches", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def synth_spec(users: int, interactions: int) -> SynthSpec:
    """A synthetic domain with ten times the demo's users and its mean history length."""
    return SynthSpec(
        name="synth-10x",
        users=10 * users,
        items=5000,
        mean_length=interactions / users,
        min_length=5,
        users_per_shard=1000,
        seed=0,
    )


def token_table(cfg, tokenizer, manifest) -> TokenTable:
    """The domain's catalog texts tokenized as training does (cached under cfg.cache_dir)."""
    catalog = __import__("pandas").read_parquet(manifest.catalog_path)
    return TokenTable.build(
        tokenizer,
        catalog["text"].tolist(),
        cfg.model.max_text_tokens,
        cfg.cache_dir,
        cfg.model.item_encoder,
        manifest.data["catalog"]["sha256"],
    )


def main(argv: list[str] | None = None) -> None:
    """Measure the demo's ML-1M and a synthetic 10x domain; write JSON and a PNG."""
    args = parse_args(argv)
    cfg = load_config(args.config)
    prepare_domains(cfg)
    demo = [load_manifest(Path(cfg.data.prepared_dir) / n) for n in ("ml-1m", "ml-100k")]
    users = sum(m.counts["users"] for m in demo)
    interactions = sum(m.counts["interactions"] for m in demo)
    synth = synth_spec(users, interactions)
    big = load_manifest(synth_domain(synth, cfg.data.prepared_dir))

    lm, tok = load_encoder(cfg.model.item_encoder)
    del lm
    run = LoaderRun(batch_size=args.batch_size, batches=args.batches)
    rows = []
    for name, manifest in (("ml-1m", demo[0]), ("synth-10x", big)):
        tokens = AttachTokens(token_table(cfg, tok, manifest), tok.pad_token_id)
        for workers in (0, 1, 2):
            for r in mode_rows(name, manifest, tokens, run, workers=workers):
                rows.append(r)
                print(
                    f"{name:10s} {r['mode']:10s} workers={workers}: "
                    f"{r['sequences_per_s']:8.0f} seq/s  {(r['tokens_per_s'] or 0):10.0f} tok/s"
                )
    result = {
        "benchmark": "data_loader",
        "config": {
            "batch_size": args.batch_size,
            "batches": args.batches,
            "max_history": run.max_history,
            "synth": synth.__dict__,
            "demo_users": users,
            "demo_interactions": interactions,
        },
        "results": rows,
    }
    out = write_result(args.out, result)
    plot(out.with_suffix(".png"), rows)
    print(f"wrote {out}")


def plot(path: Path, rows: list[dict]) -> None:
    """Sequences/s against worker count, one line per dataset and mode."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in sorted({r["dataset"] for r in rows}):
        for mode in ("cached", "end_to_end"):
            sel = [r for r in rows if r["dataset"] == name and r["mode"] == mode]
            ax.plot(
                [r["workers"] for r in sel],
                [r["sequences_per_s"] for r in sel],
                marker="o",
                label=f"{name} ({mode})",
            )
    ax.set(
        xlabel="DataLoader workers",
        ylabel="sequences / s",
        title="loader throughput",
        xticks=[0, 1, 2],
    )
    ax.legend(fontsize=8)
    save_figure(fig, path)


def dedup_ratios(
    manifest, table: TokenTable, pad_id: int, max_history: int, sizes: list[int], batches: int
) -> list[dict]:
    """Item occurrences per distinct item in a batch, by batch size: how much LM work
    end-to-end mode saves over encoding every history item of every user."""
    rows = []
    for size in sizes:
        spec = StreamSpec(batch_size=size, max_history=max_history, num_workers=0, shuffle_shards=4)
        loader = StreamLoader(manifest, spec, transform=AttachTokens(table, pad_id))
        occurrences = distinct = users = 0
        for n, b in enumerate(loader):
            real = b["targets"] > 0
            # every history item a per-example pipeline encodes: inputs + the last target
            occurrences += int(real.sum() + (real.sum(1) > 0).sum())
            distinct += len(b["items"])
            users += int(b["valid"].sum())
            if n + 1 >= batches:
                break
        rows.append(
            {
                "batch_size": size,
                "batches": n + 1,
                "items_per_user_every_occurrence": occurrences / users,
                "items_per_user_distinct": distinct / users,
                "occurrences_per_distinct": occurrences / distinct,
            }
        )
        print(f"[perf] dedup at batch {size}: {occurrences / distinct:.2f} occurrences per item")
    return rows


if __name__ == "__main__":
    main()
