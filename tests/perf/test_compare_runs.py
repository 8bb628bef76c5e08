"""perf/compare_runs.py: identical runs are called identical, and one changed number is not."""

import json

import pandas as pd

from perf.compare_runs import compare, main


def fake_run(folder, ndcg, rank):
    folder.mkdir(parents=True)
    stage = {"valid": {"ndcg@10": 0.2}, "test": {"ndcg@10": ndcg}}
    (folder / "metrics.json").write_text(json.dumps({"stages": {"adapt": stage}, "wall_s": 1.0}))
    rows = {"stage": ["adapt"] * 2, "split": ["test"] * 2, "domain": ["d"] * 2, "user": [1, 0]}
    pd.DataFrame({**rows, "rank": [rank, 3.0]}).to_parquet(folder / "ranks.parquet")


def test_identical_runs_and_one_changed_number(tmp_path):
    fake_run(tmp_path / "a", 0.1, 2.0)
    fake_run(tmp_path / "b", 0.1, 2.0)
    fake_run(tmp_path / "c", 0.1 + 1e-12, 2.0)
    fake_run(tmp_path / "d", 0.1, 2.5)
    assert compare(tmp_path / "a", tmp_path / "b")["identical"]
    metric = compare(tmp_path / "a", tmp_path / "c")
    assert not metric["identical"] and not metric["stages"]["adapt"]["test"]["identical"]
    ranks = compare(tmp_path / "a", tmp_path / "d")
    assert not ranks["identical"] and ranks["ranks"]["max_abs_diff"] == 0.5
    assert (
        main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--out", str(tmp_path / "o")])
        == 0
    )
    assert json.loads((tmp_path / "o" / "compare.json").read_text())["identical"]
    assert (
        main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "d"), "--out", str(tmp_path / "o")])
        == 1
    )
