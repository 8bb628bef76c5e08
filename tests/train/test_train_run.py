"""A whole run on two tiny synthetic domains: stages, outputs, adapters, determinism."""

import json
from pathlib import Path

import pytest
import yaml

from distrec.train.entry import run_training
from tests.conftest import tiny_run_config

STAGES = {
    "pretrain",
    "zero_shot",
    "adapt",
    "adapt_lora",
    "adapt_full",
    "baseline_popularity",
    "baseline_id_target_only",
    "baseline_text_target_only",
}


def run(tmp_path: Path, synth_dir: Path, name: str, **sections) -> dict:
    out = tmp_path / name
    cfg_file = tmp_path / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_run_config(synth_dir, out, **sections)))
    assert run_training(str(cfg_file)) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synth_dir):
    tmp = tmp_path_factory.mktemp("run")
    return tmp, run(tmp, synth_dir, "a")


def test_every_stage_reports_valid_and_test_metrics(finished):
    _, metrics = finished
    assert set(metrics["stages"]) == STAGES
    for stage in STAGES:
        test = metrics["stages"][stage]["test"]
        assert {"ndcg@10", "recall@10", "ndcg@20", "recall@50", "mrr@10"} <= set(test)
        assert 0.0 <= test["ndcg@10"] <= 1.0
    assert metrics["versions"]["torch"].startswith("2.13")


def test_every_stage_reports_beyond_accuracy_with_popularity_as_the_coverage_floor(finished):
    _, metrics = finished
    stages = metrics["stages"]
    for stage in STAGES:
        test = stages[stage]["test"]
        assert {"coverage@10", "novelty@10", "ild@10", "arp@10", "coverage@50"} <= set(test)
        assert 0.0 < test["coverage@10"] <= test["coverage@50"] <= 1.0
    # popularity gives (nearly) everyone the same list: the floor the others are read against
    floor = stages["baseline_popularity"]["test"]["coverage@10"]
    target_stages = STAGES - {"baseline_popularity", "pretrain"}  # pretrain: the source domain
    others = [stages[s]["test"]["coverage@10"] for s in target_stages]
    assert min(others) >= floor and max(others) > 2 * floor


def test_run_folder_holds_reports_events_and_peft_adapter(finished):
    tmp, _ = finished
    out = tmp / "a"
    assert (out / "report.md").read_text().count("|") > 20
    assert (out / "report.png").stat().st_size > 10_000
    assert any((out / "events").rglob("events.out.tfevents.*"))
    assert (out / "export" / "base" / "model.safetensors").exists()
    assert (out / "export" / "tiny-b" / "model.safetensors").exists()
    cfg = json.loads((out / "adapters" / "tiny-b" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA"


def test_same_seed_same_numbers(finished, tmp_path, synth_dir):
    _, first = finished
    second = run(tmp_path, synth_dir, "b")
    for stage in STAGES:
        assert second["stages"][stage]["test"] == first["stages"][stage]["test"], stage


def test_a_finished_run_is_not_overwritten(finished, synth_dir):
    from distrec.config import ConfigError

    tmp, _ = finished
    cfg_file = tmp / "again.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_run_config(synth_dir, tmp / "a")))
    before = (tmp / "a" / "metrics.json").read_text()
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run_training(str(cfg_file))
    assert (tmp / "a" / "metrics.json").read_text() == before


def test_evaluate_rebuilds_the_adapted_model_from_the_run_folder(finished):
    from distrec.train.inference import evaluate_run

    tmp, metrics = finished
    text = evaluate_run(str(tmp / "a"), "tiny-b", "test")
    expected = metrics["stages"]["adapt"]["test"]["ndcg@10"]
    assert f"ndcg@10    {expected:.4f}" in text


def test_recommend_reports_unknown_items_and_excludes_history(finished):
    from distrec.train.inference import recommend

    tmp, _ = finished
    text = recommend(str(tmp / "a"), "tiny-b", ["item-3", "no such film", "item-7"], k=5)
    assert "unknown items" in text and "'no such film'" in text
    listed = [
        line.split(". ", 1)[1].split("  (")[0]
        for line in text.splitlines()
        if line[:4].strip().endswith(".")
    ]
    assert len(listed) == 5 and "item-3" not in listed and "item-7" not in listed


def test_adapter_from_another_base_is_refused(finished, tmp_path):
    import shutil

    from distrec.config import ConfigError
    from distrec.train.inference import evaluate_run

    tmp, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(tmp / "a", copy)
    # The LoRA path is the one with a base to check (auto may have chosen full fine-tuning).
    stages = json.loads((copy / "stages.json").read_text())
    stages["adapt"]["mode"] = "lora"
    (copy / "stages.json").write_text(json.dumps(stages))
    base = copy / "export" / "base" / "model.safetensors"
    shutil.copy(tmp / "a" / "export" / "tiny-b" / "model.safetensors", base)  # other weights
    with pytest.raises(ConfigError, match=r"was trained on base weights .* but this run.s base"):
        evaluate_run(str(copy), "tiny-b")
