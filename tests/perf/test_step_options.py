"""perf/step_options.py: variant parsing, the config each variant trains, ratios and the table."""

from __future__ import annotations

import pytest

from perf import step_options as so


def test_variants_by_name_and_by_overrides():
    assert so.parse_variants([]) == [
        so.Variant(n, tuple(so.VARIANTS[n])) for n in so.DEFAULT_VARIANTS
    ]
    compiled, custom = so.parse_variants(["compile", "lm0:model.lm_dropout=0, peft.dropout=0"])
    assert compiled == so.Variant("compile", ("train.compile=true",))
    assert custom == so.Variant("lm0", ("model.lm_dropout=0", "peft.dropout=0"))


@pytest.mark.parametrize(
    "specs, message",
    [
        (["nope"], "not a known variant"),
        (["x:model.lm_dropout"], "not KEY=VALUE"),
        ([":train.compile=true"], "expected NAME"),
        (["compile", "compile:train.compile=true"], "given twice"),
    ],
)
def test_bad_variants_are_refused_with_the_way_out(specs, message):
    with pytest.raises(ValueError, match=message):
        so.parse_variants(specs)


def test_steps_parse_and_refuse():
    assert so.parse_steps("2,3,2") == (2, 3, 2)
    for bad in ("2,3", "0,3,2", "a,b,c"):
        with pytest.raises(ValueError, match="WARMUP,WINDOWS,PER_WINDOW"):
            so.parse_steps(bad)


def test_variant_config_applies_the_overrides_and_validates():
    from distrec.config import RunConfig

    cfg = RunConfig.model_validate({"data": {"domains": []}})
    both = so.Variant("both", ("train.compile=true", "model.activation_checkpointing=true"))
    out = so.variant_config(cfg, both)
    assert out.train.compile and out.model.activation_checkpointing
    assert not cfg.train.compile  # the workload's own config is untouched
    with pytest.raises(Exception, match="compile"):
        so.variant_config(cfg, so.Variant("bad", ("train.compile=maybe",)))


def row(name: str, median: float, fastest: float, mib: float, graphs: int = 0) -> dict:
    return {
        "name": name,
        "overrides": [] if name == "baseline" else [f"{name}=true"],
        "step_s": {"median": median, "fastest_window": fastest},
        "mfu": {"median": 0.1 / median, "fastest_window": 0.1 / fastest},
        "non_matmul_share": None if name == "baseline" else 0.25,
        "peak_memory": {"kind": "process_rss_sampled", "increase_bytes": int(mib * so.MIB)},
        "compile": {"unique_graphs": graphs, "recompiles": 0},
    }


def test_ratios_and_table_are_to_the_first_variant():
    rows = [row("baseline", 2.0, 1.5, 400), row("compile", 1.0, 1.0, 500, graphs=4)]
    so.ratios(rows)
    assert rows[1]["vs_first"] == pytest.approx(
        {"speedup_median": 2.0, "speedup_fastest": 1.5, "memory_increase": 1.25}
    )
    assert rows[0]["vs_first"]["speedup_median"] == 1.0
    text = so.markdown(
        {
            "suite": "quick",
            "device": "cpu",
            "workload": "tiny",
            "steps": [1, 3, 2],
            "variants": rows,
        }
    )
    lines = text.splitlines()
    assert (
        "| compile | `compile=true` | 1.000 | 1.000 | 2.00x / 1.50x | 10.0% / 10.0% | 25% | 500 "
        "| 1.25x | 4 / 0 |" in lines
    )
    assert (
        "| baseline | - | 2.000 | 1.500 | 1.00x / 1.00x | 5.0% / 6.7% | - | 400 | 1.00x | 0 / 0 |"
        in lines
    )


def test_the_ablation_path_is_one_option_at_a_time_over_the_step_before():
    from distrec.config import RunConfig

    variants = {v.name: v for v in so.parse_variants(so.ABLATION)}
    cfg = RunConfig.model_validate({"data": {"domains": []}})
    before = so.variant_config(cfg, variants["before"]).model_dump()
    assert before["train"]["frozen_lm_storage"] == "fp32" and before["model"]["lm_dropout"] is None
    for name in (
        "+bf16_storage",
        "+packing",
        "+no_lm_dropout",
        "+no_lora_dropout",
        "+eager_attention",
    ):
        one = so.variant_config(cfg, variants[name]).model_dump()
        changed = [
            (section, key)
            for section in ("train", "model", "peft")
            for key in before[section]
            if one[section][key] != before[section][key]
        ]
        assert len(changed) == 1, (name, changed)
    assert variants["default"].overrides == ()
    assert so.main(["--out", "x", "--ablation", "--variant", "baseline"]) == 2


def test_bad_input_exits_2_before_building_anything(tmp_path, capsys):
    assert so.main(["--out", str(tmp_path), "--variant", "nope"]) == 2
    assert so.main(["--out", str(tmp_path), "--steps", "1,2"]) == 2
    err = capsys.readouterr().err
    assert "not a known variant" in err and "WARMUP,WINDOWS,PER_WINDOW" in err
    assert not (tmp_path / "work").exists()


def test_variants_must_share_the_one_accelerator():
    from distrec.config import RunConfig

    cfg = RunConfig.model_validate({"data": {"domains": []}, "train": {"precision": "fp32"}})
    same = so.parse_variants(["baseline", "compile", "checkpointing"])
    so.check_one_accelerator(cfg, same)
    for spec in ("bf16:train.precision=bf16", "accum:train.grad_accum=2"):
        with pytest.raises(ValueError, match="one per process"):
            so.check_one_accelerator(cfg, [same[0], so.parse_variant(spec)])


def test_the_plot_is_written_from_the_rows(tmp_path):
    rows = [row("baseline", 2.0, 1.5, 400), row("compile", 1.0, 1.0, 500, graphs=4)]
    so.ratios(rows)
    result = {"suite": "quick", "workload": "tiny", "variants": rows}
    assert so.plot(result, tmp_path / "p.png") == "p.png"
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
