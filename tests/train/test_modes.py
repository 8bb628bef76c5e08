"""Cached and end-to-end modes are one model: same weights, same evaluation (the cache is exact)."""

from pathlib import Path

import pytest
import torch

from distrec.config import config_from_dict
from distrec.distributed.accelerator import build_accelerator
from distrec.train.evaluation import Evaluator
from distrec.train.stages.pipeline import Pipeline, new_model
from distrec.train.workspace import Workspace
from tests.conftest import tiny_run_config


def make_run(synth_dir: Path, tmp_path: Path, mode: str, **model) -> Workspace:
    cfg = config_from_dict(
        tiny_run_config(synth_dir, tmp_path / mode, model={"mode": mode, **model})
    )
    accelerator, precision = build_accelerator(cfg)
    return Workspace.open(cfg, accelerator, precision, out=tmp_path / mode)


def evaluate_domain(ws: Workspace, model, d, split: str) -> dict:
    return Evaluator(ws).metrics(model, [d.name], split)


def test_frozen_lm_gives_identical_metrics_cached_and_end_to_end(synth_dir, tmp_path):
    cached, e2e = (
        make_run(synth_dir, tmp_path, "cached"),
        make_run(synth_dir, tmp_path, "end_to_end"),
    )
    a, b = new_model(cached), new_model(e2e)
    b.load_state_dict(a.state_dict() | {k: v for k, v in b.state_dict().items() if ".lm." in k})
    for domain in ("tiny", "tiny-b"):
        m_cached = evaluate_domain(cached, a, cached.domains[domain], "valid")
        m_e2e = evaluate_domain(e2e, b, e2e.domains[domain], "valid")
        for key in m_cached:
            assert m_e2e[key] == pytest.approx(m_cached[key], abs=1e-4), (domain, key)


def test_untrained_towers_rank_near_random(synth_dir, tmp_path):
    # Without the popularity prior (which starts as a popularity ranker on purpose), an
    # untrained model must score like chance: 60 items, about 7 masked per user, random
    # NDCG@10 is about 0.08; a NaN or tie bug scores far higher.
    run = make_run(synth_dir, tmp_path, "cached", popularity_prior=False)
    m = evaluate_domain(run, new_model(run), run.domains["tiny-b"], "test")
    assert m["ndcg@10"] < 0.2


def test_the_popularity_prior_alone_is_a_popularity_ranker(synth_dir, tmp_path):
    from distrec.train.stages.baselines import popularity

    run = make_run(synth_dir, tmp_path, "cached")
    model = new_model(run)
    for name, p in model.named_parameters():  # silence the towers: only the prior scores
        if name != "pop_weight":
            p.data.zero_()
    m = evaluate_domain(run, model, run.domains["tiny-b"], "test")
    pipe = Pipeline(run)
    popularity(pipe)
    pop = pipe.results["baseline_popularity"]["test"]["ndcg@10"]
    assert m["ndcg@10"] == pytest.approx(pop, abs=0.02)


def test_end_to_end_lora_and_adalora_train(synth_dir, tmp_path):
    import json

    import yaml

    from distrec.train.entry import run_training

    for method in ("lora", "adalora"):
        out = tmp_path / f"run-{method}"
        cfg = tiny_run_config(
            synth_dir,
            out,
            model={"mode": "end_to_end", "max_text_tokens": 16},
            peft={"method": method, "r": 4, "adalora": {"init_r": 6, "target_r": 2}},
            stages={
                "pretrain": {"epochs": 1},
                "adapt": {"epochs": 2, "mode": "lora"},
                "baselines": ["popularity"],
            },
            train={"batch_size": 32, "precision": "fp32", "max_steps": 6},
        )
        (tmp_path / f"{method}.yaml").write_text(yaml.safe_dump(cfg))
        assert run_training(str(tmp_path / f"{method}.yaml")) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["stages"]["adapt"]["steps"] > 0
        adapter = json.loads((out / "adapters" / "tiny-b" / "adapter_config.json").read_text())
        assert adapter["peft_type"] == method.upper()
        from safetensors.torch import load_file

        keys = load_file(str(out / "adapters" / "tiny-b" / "adapter_model.safetensors")).keys()
        assert any(".lm." in k and "lora_A" in k for k in keys)  # the LM itself is adapted
        assert any("user_tower" in k and "lora_A" in k for k in keys)
        assert not any("pooler" in k for k in keys)
        assert torch.isfinite(torch.tensor(metrics["stages"]["adapt"]["test"]["ndcg@10"]))


def test_a_domain_name_that_would_corrupt_peft_keys_is_refused(synth_dir, tmp_path):
    from distrec.config import ConfigError
    from distrec.train.adapters import check_adapter_name

    run = make_run(synth_dir, tmp_path, "cached")
    model = new_model(run)
    check_adapter_name(model, "tiny-b")
    with pytest.raises(ConfigError, match=r"domain name 'fc' cannot name a PEFT adapter.*fc1"):
        check_adapter_name(model, "fc")


def test_a_head_that_needs_ratings_refuses_a_domain_without(synth_dir, tmp_path):
    import yaml

    from distrec.config import ConfigError
    from distrec.train.entry import run_training

    small = {"pretrain": {"epochs": 1}, "adapt": {"epochs": 1}, "baselines": []}
    for name, sections, message in (
        (
            "src",
            {"model": {"heads": {"rating": 1.0}}},
            r"model\.heads has 'rating' but domain 'tiny'",
        ),
        (
            "tgt",
            {"stages": {**small, "adapt": {"epochs": 1, "heads": {"preference": 1.0}}}},
            r"stages\.adapt\.heads has 'preference' but domain 'tiny-b' has no ratings",
        ),
    ):
        cfg = tiny_run_config(synth_dir, tmp_path / name, **{"stages": small, **sections})
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(ConfigError, match=message):
            run_training(str(tmp_path / f"{name}.yaml"))


def test_the_workspace_lm_attention_follows_model_attention(synth_dir, tmp_path):
    """auto: eager for end-to-end training on CPU (its backward is the fast one there)."""
    assert make_run(synth_dir, tmp_path, "end_to_end").text.lm.config._attn_implementation == (
        "eager"
    )
    chosen = make_run(synth_dir, tmp_path / "s", "end_to_end", attention="sdpa")
    assert chosen.text.lm.config._attn_implementation == "sdpa"
