"""summary.json and summary.md from saved benchmark results: the committed CPU run
(perf/results/cpu) is reproduced exactly from its own per-benchmark JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perf import summary

RESULTS = Path(__file__).resolve().parents[2] / "perf" / "results" / "cpu"


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


class _Workload:
    def __init__(self, described: dict) -> None:
        self.described = described

    def describe(self) -> dict:
        return self.described


@pytest.fixture
def stored(monkeypatch) -> dict:
    saved = _load("summary.json")
    monkeypatch.setattr(summary, "device_description", lambda: saved["device"])
    monkeypatch.setattr(summary, "load_average", lambda: saved["load_average_end"])
    return saved


def _results(**skip: None) -> summary.SuiteResults:
    parts = {
        "peak": _load("peak.json"),
        "train": _load("train.json"),
        "baseline": _load("baseline_hf_trainer.json"),
        "equal_loss": _load("baseline_equal_loss.json"),
        "evaluation": _load("eval.json"),
        "data": _load("bench_data.json"),
        "memory": _load("memory.json"),
        "scaling": _load("scaling.json"),
        "baseline_dedup": _load("baseline_hf_trainer_dedup.json"),
    }
    return summary.SuiteResults(**(parts | skip))


def _summarize(stored: dict, results: summary.SuiteResults, **kw) -> dict:
    args = {
        "suite": stored["suite"],
        "workload": _Workload(stored["config"]),
        "skipped": stored["skipped"],
        "load_start": stored["load_average_start"],
    }
    return json.loads(json.dumps(summary.summarize(results, **(args | kw))))


def test_summary_json_is_reproduced_from_the_benchmark_files(stored):
    got = _summarize(stored, _results())
    assert got == {k: stored[k] for k in got}
    assert list(got) == [k for k in stored if k in got]  # the same key order too


def test_summary_md_is_reproduced_from_summary_json(stored):
    assert summary.summary_markdown(stored) == (RESULTS / "summary.md").read_text()


def test_skipped_benchmarks_leave_their_sections_out(stored):
    skip = {"baseline": None, "equal_loss": None, "evaluation": None, "data": None}
    got = _summarize(stored, _results(**skip), suite="quick", skipped={"baseline": "--skip"})
    assert got["speedup_vs_hf_trainer"] is None and got["equal_loss"] is None
    assert got["targets"]["speedup_vs_hf_trainer"]["met"] is None
    assert "eval" not in got and "loader_best" not in got
    assert got["targets_note"].startswith("the issue's targets are stated for --suite full")
    md = summary.summary_markdown(got | {"failures": {"data": "boom\ntrace"}})
    assert "## Evaluation" not in md and "## Data" not in md
    assert "## Skipped\n\n- baseline: --skip" in md and "- data: boom\n" in md


def _with_dedup(users_per_s: float, items_per_user: float) -> dict:
    dedup = _load("baseline_hf_trainer.json")
    dedup["median"] = dedup["median"] | {"users_per_s": users_per_s}
    dedup["best_window"] = dedup["best_window"] | {"users_per_s": users_per_s}
    return dedup | {"items_encoded_per_user": items_per_user, "dedup": True}


def test_the_dedup_baseline_has_its_speedup_target_and_throughput_row(stored):
    e2e = _load("train.json")["end_to_end"]["median"]["users_per_s"]
    results = _results(baseline_dedup=_with_dedup(e2e / 2, 13.2))
    got = _summarize(stored, results)
    assert got["speedup_vs_hf_trainer_dedup"] == pytest.approx(2.0)
    assert got["targets"]["speedup_vs_hf_trainer_dedup"]["met"] is True
    assert got["best_window"]["speedup_vs_hf_trainer_dedup"] > 0
    assert got["dedup_items_per_user"]["hf_trainer_dedup_baseline"] == 13.2
    md = summary.summary_markdown(got)
    assert "| hf_trainer_dedup_baseline | " in md
    assert "| speedup_vs_hf_trainer_dedup (" in md and "| 2 |" in md
    assert "HF Trainer dedup baseline 13.2" in md


def test_mfu_target_is_met_by_either_number(stored):
    train = _load("train.json")
    profiled = train["end_to_end"]["profile"]["shares"]
    mostly_matmul = profiled | {"matmul and attention kernels": 0.8}
    train["end_to_end"]["profile"] = train["end_to_end"]["profile"] | {"shares": mostly_matmul}
    got = _summarize(stored, _results(train=train))
    target = got["targets"]["mfu_e2e"]
    assert target["value"] < 0.35 and target["alternative"]["value"] == pytest.approx(0.2)
    assert target["met"] is True and target["alternative"]["met"] is True
    del train["end_to_end"]["profile"]  # unprofiled: the MFU alone decides
    target = _summarize(stored, _results(train=train))["targets"]["mfu_e2e"]
    assert target["alternative"]["value"] is None and target["met"] is False


def test_memory_target_halves_the_recorded_cpu_peak(stored):
    got = _summarize(stored, _results())
    t = got["targets"]["e2e_peak_memory_gib"]
    recorded = _load("memory.json")["per_mode"]["end_to_end_train"]["peak_bytes"] / 2**30
    assert t["target"] == "<= 4.37" and t["value"] == pytest.approx(recorded)
    assert t["met"] is (recorded <= 4.37)
