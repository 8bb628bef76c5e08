"""Loader-only throughput rows (perf/bench_data.py) on a small synthetic domain."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distrec.data.manifest import load_manifest
from distrec.data.synth import SynthSpec, synth_domain
from distrec.data.tokens import AttachTokens, TokenTable
from perf import bench_data


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    spec = SynthSpec(
        name="bench-synth", users=40, items=30, mean_length=6.0, min_length=3, users_per_shard=10
    )
    manifest = load_manifest(synth_domain(spec, root))
    lengths = torch.randint(
        1, 6, (manifest.num_items + 1,), generator=torch.Generator().manual_seed(0)
    )
    ids = torch.arange(1, 9, dtype=torch.int32).repeat(manifest.num_items + 1, 1)
    return manifest, TokenTable(ids, lengths.to(torch.int32))


def test_loader_throughput_has_a_cached_and_an_end_to_end_row_per_worker_count(domain, capsys):
    manifest, table = domain
    run = bench_data.LoaderRun(batch_size=8, batches=2, max_history=5)
    rows = bench_data.loader_throughput(
        "bench-synth", manifest, AttachTokens(table, 0), run, workers=(0,)
    )
    assert [(r["dataset"], r["mode"], r["workers"]) for r in rows] == [
        ("bench-synth", "cached", 0),
        ("bench-synth", "end_to_end", 0),
    ]
    cached, e2e = rows
    assert cached["tokens_per_s"] is None and e2e["tokens_per_s"] > 0
    assert all(r["batches"] == 2 and r["sequences_per_s"] > 0 for r in rows)
    assert "[perf] loader bench-synth end_to_end workers=0:" in capsys.readouterr().out


def test_dedup_ratios_count_every_history_item_against_distinct_items(domain):
    manifest, table = domain
    (row,) = bench_data.dedup_ratios(manifest, table, 0, 5, [8], 2)
    assert row["occurrences_per_distinct"] >= 1.0
    assert row["items_per_user_every_occurrence"] >= row["items_per_user_distinct"]


def test_plot_writes_a_png(tmp_path: Path):
    rows = [
        {"dataset": "d", "mode": m, "workers": w, "sequences_per_s": 10.0 + w}
        for m in ("cached", "end_to_end")
        for w in (0, 1, 2)
    ]
    bench_data.plot(tmp_path / "loader.png", rows)
    assert (tmp_path / "loader.png").stat().st_size > 0
