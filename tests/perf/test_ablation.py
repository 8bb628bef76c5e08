"""perf/ablation.py over fabricated variant dirs: rows per variant, ratio to the first."""

from perf import ablation
from tests.perf.test_quality import fabricate_ranks, write_run

STAGE = "baseline_id_target_only"


def test_each_variant_is_summarised_against_the_first(tmp_path, monkeypatch):
    variants = [("before", ["data.train_window=last"]), ("after", ["data.train_window=all"])]
    monkeypatch.setattr(ablation, "VARIANTS", variants)
    for (name, _), scale in zip(variants, (30.0, 5.0), strict=True):
        for s in range(2):
            write_run(
                tmp_path / ablation.slug(name) / f"seed-{s}", fabricate_ranks({STAGE: scale}, s)
            )
    rows = ablation.summarise(tmp_path, STAGE, seeds=2)
    assert [r["variant"] for r in rows] == ["before", "after"]
    assert "test_ratio_to_first" not in rows[0]
    ratio = rows[1]["test_ratio_to_first"]
    assert ratio["low"] > 1.0 and ratio["low"] <= ratio["ratio"] <= ratio["high"]
    assert rows[1]["test_ndcg@10"]["mean"] > rows[0]["test_ndcg@10"]["mean"]
    table = ablation.markdown(rows, STAGE)
    assert "| after | 2 |" in table and "x [" in table
