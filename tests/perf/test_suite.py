"""The benchmark suite's contract: `--suite quick` writes well-formed JSON (never a timed test),
and bad input is refused with a clear message before any work starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "mfu_e2e": float,
    "speedup_vs_hf_trainer": float,
    "speedup_vs_hf_trainer_dedup": float,
    "e2e_peak_memory_gib": float,
    "cached_over_e2e": float,
    "data_wait_fraction_cached": float,
    "device": str,
}


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perf", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_unknown_suite_is_refused(tmp_path):
    proc = bench("--suite", "huge", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "--suite 'huge': expected one of ['quick', 'full']" in proc.stderr


def test_existing_results_are_not_overwritten(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    proc = bench("--suite", "quick", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "already holds results (summary.json)" in proc.stderr
    assert "--overwrite" in proc.stderr
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_unwritable_out_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    proc = bench("--suite", "quick", "--out", str(tmp_path / "file" / "sub"))
    assert proc.returncode == 2
    assert "cannot write there" in proc.stderr


def test_distrec_bench_forwards_to_the_checkout_suite(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "distrec.cli", "bench", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "already holds results" in proc.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_quick_suite_writes_well_formed_results(tmp_path):
    out = tmp_path / "bench"
    proc = bench("--suite", "quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for key, kind in SUMMARY_KEYS.items():
        assert isinstance(summary[key], kind), (key, summary[key])
    assert 0.0 < summary["mfu_e2e"] < 1.0
    assert 0.0 <= summary["data_wait_fraction_cached"] < 1.0
    assert summary["equal_loss"]["losses_match"] is True
    assert set(summary["targets"]) == {
        "mfu_e2e",
        "speedup_vs_hf_trainer",
        "speedup_vs_hf_trainer_dedup",
        "cached_over_e2e",
        "data_wait_fraction_cached",
        "e2e_peak_memory_gib",
    }
    assert summary["targets"]["mfu_e2e"]["alternative"]["key"] == "non_matmul_share_e2e"
    assert set(summary["equal_loss"]["per_baseline"]) == {"hf_trainer", "hf_trainer_dedup"}
    assert all(v["losses_match"] for v in summary["equal_loss"]["per_baseline"].values())
    items = summary["dedup_items_per_user"]
    assert items["hf_trainer_dedup_baseline"] < items["hf_trainer_baseline"]
    memory = json.loads((out / "memory.json").read_text())["per_mode"]
    assert {"hf_trainer_baseline_train", "hf_trainer_dedup_baseline_train"} <= set(memory)
    assert {"baseline_hf_trainer.json", "baseline_hf_trainer_dedup.json"} <= set(summary["files"])
    for name in summary["files"]:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".json"):
            result = json.loads((out / name).read_text())
            assert {"machine", "versions", "commit", "device"} <= set(result), name
            assert "config" in result, name
    train = json.loads((out / "train.json").read_text())
    for mode in ("cached", "end_to_end"):
        m = train[mode]["median"]
        assert m["users_per_s"] > 0 and m["model_flops_per_s"] > 0
    assert "formula" in train["end_to_end"]["flops"]
    assert train["end_to_end"]["profile"]["top_ops"]
    peak = json.loads((out / "peak.json").read_text())
    assert peak["measured"]["bf16"]["flops_per_s"] > 0
    assert (out / "summary.md").read_text().startswith("# distrec bench")
