"""perf/scale_report.py (bench_scale.py's report): fitted growth exponents, the markdown and the plot, from
recorded rows (the measurements themselves are minutes long: perf/results/scale)."""

from __future__ import annotations

import pytest

from perf.scale_report import fits, growth_exponent, markdown, plot


def rows(exponent: float, loss: str) -> list[dict]:
    return [
        {
            "items": n,
            "loss": loss,
            "step_s_median": 0.01 * (n / 1e3) ** exponent,
            "step_s_fastest": 0.008 * (n / 1e3) ** exponent,
            "peak_rss_mib": 500.0,
        }
        for n in (1_000, 10_000, 100_000, 1_000_000)
    ]


def test_growth_exponent_is_the_log_log_slope():
    assert growth_exponent([(10, 1.0), (100, 10.0), (1000, 100.0)]) == pytest.approx(1.0)
    assert growth_exponent([(1e4, 2.0), (1e6, 2.0)]) == pytest.approx(0.0, abs=1e-12)
    assert growth_exponent([(1e4, 2.0)]) is None


def test_report_fits_each_curve_and_renders(tmp_path):
    result = {
        "train": rows(0.95, "full") + rows(0.05, "sampled"),
        "eval": [
            {"items": 1e4, "ranks": 1, "users": 512, "users_per_s": 400.0,
             "peak_rss_mib_per_rank": [900.0]},
            {"items": 1e6, "ranks": 1, "users": 512, "users_per_s": 4.0,
             "peak_rss_mib_per_rank": [3000.0]},
            {"items": 1e4, "ranks": 2, "users": 512, "users_per_s": 300.0,
             "peak_rss_mib_per_rank": [800.0, 790.0], "peak_ratio_to_one_process": 0.89,
             "metrics_equal_one_process": True},
            {"items": 1e6, "ranks": 2, "users": 512, "users_per_s": 6.0,
             "peak_rss_mib_per_rank": [1500.0, 1490.0], "peak_ratio_to_one_process": 0.5,
             "metrics_equal_one_process": True},
        ],
    }  # fmt: skip
    result["fits"] = fits(result)
    f = result["fits"]
    assert f["train_step_full_exponent_1e4_1e6"] == pytest.approx(0.95)
    assert f["train_step_sampled_exponent_1e4_1e6"] == pytest.approx(0.05)
    assert f["eval_seconds_per_user_exponent_1_ranks"] == pytest.approx(1.0)
    text = markdown(result)
    assert "| 1,000,000 | sampled |" in text and "0.50" in text
    plot(result, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 1000
