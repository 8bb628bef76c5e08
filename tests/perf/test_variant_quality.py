"""perf/variant_quality.py over fabricated seed dirs: a planted difference is found, an equal
pair is called unchanged, and only seeds both variants finished are paired; never trains."""

from __future__ import annotations

import json

import pytest

from perf import variant_quality
from tests.perf.test_quality import fabricate_ranks, write_run


def write_variant(out, name: str, scales: dict[str, float], seeds: list[int]) -> None:
    for s in seeds:
        write_run(out / name / f"seed-{s}", fabricate_ranks(scales, seed=s))


def test_a_planted_gain_is_found_and_equal_variants_are_unchanged(tmp_path):
    out = tmp_path / "v"
    # adapt: B's targets rank far better; zero_shot: the very same ranks in both.
    write_variant(out, "a", {"adapt": 20.0, "zero_shot": 30.0}, [0, 1])
    b = {"adapt": 4.0, "zero_shot": 30.0}
    write_variant(out, "b", b, [0, 1])
    args = ["--config", "c.yaml", "--b", "model.lm_dropout=0.0", "--out", str(out)]
    assert variant_quality.main([*args, "--aggregate-only", "--n-boot", "300"]) == 0
    result = json.loads((out / "variant_quality.json").read_text())
    rows = {(r["stage"], r["split"]): r for r in result["rows"]}
    gain = rows[("adapt", "test")]
    assert gain["ratio_b_over_a"] > 1.5 and gain["interval"][0] > 1.0 and not gain["unchanged"]
    assert gain["verdict"] == "B better"
    same = rows[("zero_shot", "test")]
    assert same["ratio_b_over_a"] == pytest.approx(1.0) and same["verdict"] == "unchanged"
    assert result["seeds"] == [0, 1]
    assert "| adapt | test |" in (out / "variant_quality.md").read_text()


def test_only_seeds_both_variants_finished_are_paired(tmp_path):
    out = tmp_path / "v"
    write_variant(out, "a", {"adapt": 5.0, "zero_shot": 9.0}, [0, 1])
    write_variant(out, "b", {"adapt": 5.0, "zero_shot": 9.0}, [0])
    rows, seeds = variant_quality.compare(out, ["adapt"], 200)
    assert seeds == [0] and rows[0]["a"]["values"] == rows[0]["b"]["values"]


def test_identical_overrides_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        variant_quality.main(["--config", "c.yaml", "--a", "x=1", "--b", "x=1", "--out", "o"])
