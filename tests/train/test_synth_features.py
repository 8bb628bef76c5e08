"""Training on generated item features (`distrec data synth --feature-dim`): the scale
benchmarks' domains, whose features stand in for the LM's so no LM is loaded or run."""

from __future__ import annotations

from pathlib import Path

import pytest

from distrec.config import ConfigError, config_from_dict
from distrec.data.synth import SynthSpec, synth_domain
from distrec.distributed.accelerator import build_accelerator
from distrec.train import workspace
from distrec.train.evaluation import Evaluator
from distrec.train.stages.pipeline import new_model
from distrec.train.workspace import Workspace
from tests.conftest import CACHE, tiny_run_config
from tests.train.test_quality import train

SMALL = dict(users=40, items=30, mean_length=6, min_length=3, users_per_shard=20)


@pytest.fixture(scope="module")
def feature_domains() -> Path:
    out = CACHE / "synth-features"
    rule = dict(users=300, items=60, mean_length=14, min_length=4, zipf=0.6, rule=0.7)
    synth_domain(
        SynthSpec(name="feat-rule", seed=5, users_per_shard=50, feature_dim=24, **rule), out
    )
    synth_domain(SynthSpec(name="feat-16", seed=7, feature_dim=16, **SMALL), out)
    synth_domain(SynthSpec(name="feat-8", seed=8, feature_dim=8, **SMALL), out)
    synth_domain(SynthSpec(name="plain", seed=9, **SMALL), out)
    return out


@pytest.fixture
def no_lm(monkeypatch):
    """Loading the LM (or encoding a text with it) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the LM was loaded for a run over generated features")

    monkeypatch.setattr(workspace, "load_encoder", refuse)


def run_config(prepared: Path, out: Path, domains: list[str], target: str, **sections) -> dict:
    data = {"domains": [{"name": n, "format": "prepared"} for n in domains]}
    data |= {"sources": [n for n in domains if n != target], "target": target}
    if not data["sources"]:
        alone = {"pretrain": {"enabled": False}, "zero_shot": False, "adapt": {"enabled": False}}
        sections["stages"] = alone | sections.get("stages", {})
        sections["stages"].setdefault("baselines", ["text_target_only"])
    return tiny_run_config(prepared, out, data=data, report_to=[], **sections)


def open_workspace(cfg: dict, out: Path) -> Workspace:
    run = config_from_dict(cfg)
    accelerator, precision = build_accelerator(run)
    return Workspace.open(run, accelerator, precision, out=out)


def test_a_text_model_trains_on_generated_features_without_the_lm(tmp_path, feature_domains, no_lm):
    # No ID rows: the generated features are all the item tower sees, so learning the
    # planted chain far beyond popularity (and an untrained model) means they are read.
    stages = {"pretrain": {"enabled": False}, "zero_shot": False, "adapt": {"enabled": False}}
    stages |= {"baselines": ["popularity", "text_target_only"], "text_baseline_epochs": 16}
    cfg = run_config(
        feature_domains,
        tmp_path / "run",
        ["feat-rule"],
        "feat-rule",
        stages=stages,
        model={"item_id_embeddings": False},
        train={"lr": 3e-3},
    )
    cfg["cache_dir"] = str(tmp_path / "cache")
    found = train(tmp_path, cfg)
    ndcg = {k: v["test"]["ndcg@10"] for k, v in found.items()}
    ws = open_workspace(cfg, tmp_path / "untrained")
    assert ws.text is None and ws.feature_dim == 24
    untrained = Evaluator(ws).metrics(new_model(ws), ["feat-rule"], "test")["ndcg@10"]
    # Recorded: popularity 0.180, the features-only text model 0.645 (3.6x).
    assert ndcg["baseline_text_target_only"] > 2.0 * ndcg["baseline_popularity"], ndcg
    assert ndcg["baseline_text_target_only"] > 2.0 * untrained, (ndcg, untrained)
    assert not (tmp_path / "cache" / "features").exists(), "LM features were encoded"


def test_the_item_tower_reads_the_generated_width(tmp_path, feature_domains, no_lm):
    cfg = run_config(feature_domains, tmp_path / "w", ["feat-16"], "feat-16")
    ws = open_workspace(cfg, tmp_path / "w")
    model = new_model(ws)
    assert model.item_tower.proj.fc_in.in_features == 16
    assert ws.domains["feat-16"].features.shape == (31, 16)


@pytest.mark.parametrize(
    ("domains", "extra", "message"),
    [
        (
            ["feat-16", "plain"],
            {},
            r"\['plain'\] do not .*synthesise \['plain'\] with --feature-dim 16",
        ),
        (["feat-16", "feat-8"], {}, r"differ in width .*same --feature-dim"),
        (
            ["feat-16"],
            {"model": {"mode": "end_to_end"}},
            r"model.mode='end_to_end' .*model.mode=cached",
        ),
    ],
)
def test_mixed_mismatched_or_end_to_end_runs_are_refused(
    tmp_path, feature_domains, no_lm, domains, extra, message
):
    cfg = run_config(feature_domains, tmp_path / "x", domains, domains[-1], **extra)
    with pytest.raises(ConfigError, match=message):
        open_workspace(cfg, tmp_path / "x")


def test_an_id_only_run_ignores_the_generated_features(tmp_path, feature_domains, no_lm):
    stages = {"pretrain": {"enabled": False}, "zero_shot": False, "adapt": {"enabled": False}}
    stages |= {"baselines": ["id_target_only"]}
    cfg = run_config(feature_domains, tmp_path / "id", ["feat-16", "plain"], "plain", stages=stages)
    ws = open_workspace(cfg, tmp_path / "id")
    assert ws.text is None and all(d.features is None for d in ws.domains.values())
