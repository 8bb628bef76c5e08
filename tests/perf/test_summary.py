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
