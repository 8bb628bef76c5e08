"""Preempt a run mid-stage (SIGTERM path), resume it, and end exactly where an uninterrupted run ends."""

import json

import torch
import yaml
from safetensors.torch import load_file

import distrec.train.trainer as loop
from distrec.train.checkpoint import PREEMPTED
from distrec.train.entry import run_training
from tests.conftest import tiny_run_config


def config(tmp_path, synth_dir, name, **sections):
    cfg = tiny_run_config(
        synth_dir,
        tmp_path / name,
        stages={"pretrain": {"epochs": 3}, "adapt": {"epochs": 2}, "baselines": ["popularity"]},
        output={"keep_last": 2},
        **sections,
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_preempted_run_resumes_to_identical_metrics(tmp_path, synth_dir, monkeypatch):
    assert run_training(config(tmp_path, synth_dir, "straight")) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())

    real = loop.preemption_requested
    calls = {"n": 0}

    def preempt_at_batch_13():
        calls["n"] += 1
        if calls["n"] == 13:  # mid-epoch 2 of pretraining (10 batches per epoch)
            PREEMPTED.set()
        return real()

    monkeypatch.setattr(loop, "preemption_requested", preempt_at_batch_13)
    cfg = config(tmp_path, synth_dir, "cut")
    assert run_training(cfg) == 143
    PREEMPTED.clear()
    saved = list((tmp_path / "cut" / "checkpoints" / "pretrain").glob("step-*"))
    assert saved and not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(loop, "preemption_requested", real)
    assert run_training(cfg, resume="auto") == 0
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for stage in straight["stages"]:
        assert resumed["stages"][stage]["test"] == straight["stages"][stage]["test"], stage
    losses = [h["loss"] for h in resumed["stages"]["pretrain"]["history"]]
    assert losses == [h["loss"] for h in straight["stages"]["pretrain"]["history"]]


def preempted_then_resumed(cfg: str, monkeypatch, at_batch: int) -> None:
    real = loop.preemption_requested
    calls = {"n": 0}

    def preempt():
        calls["n"] += 1
        if calls["n"] == at_batch:
            PREEMPTED.set()
        return real()

    monkeypatch.setattr(loop, "preemption_requested", preempt)
    assert run_training(cfg) == 143
    PREEMPTED.clear()
    monkeypatch.setattr(loop, "preemption_requested", real)
    assert run_training(cfg, resume="auto") == 0


def test_adalora_preempted_before_its_budget_is_final_resumes_to_the_same_rank_pattern(
    tmp_path, synth_dir, monkeypatch
):
    # adapt: 5 steps per epoch, 2 epochs; AdaLoRA moves its budget on steps 1..8 from
    # importance scores averaged over steps, so those scores are part of the checkpoint.
    adalora = {"init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 2, "delta_t": 1}
    peft = {"method": "adalora", "r": 4, "adalora": adalora}
    runs = {}
    for name in ("straight", "cut"):
        runs[name] = config(tmp_path, synth_dir, name, peft=peft)
    assert run_training(runs["straight"]) == 0
    preempted_then_resumed(runs["cut"], monkeypatch, at_batch=30 + 6)  # adapt's step 6
    assert list((tmp_path / "cut" / "checkpoints" / "adapt_lora").glob("step-*/hooks.safetensors"))

    def adapter(name):
        folder = tmp_path / name / "adapters" / "tiny-b"
        config = json.loads((folder / "adapter_config.json").read_text())
        return load_file(str(folder / "adapter_model.safetensors")), config["rank_pattern"]

    (want, want_pattern), (got, got_pattern) = adapter("straight"), adapter("cut")
    assert want_pattern and got_pattern == want_pattern
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    straight, cut = (
        json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("straight", "cut")
    )
    assert cut["stages"]["adapt_lora"]["test"] == straight["stages"]["adapt_lora"]["test"]


def test_preempted_at_an_epochs_last_batch_resumes_to_the_same_history(
    tmp_path, synth_dir, monkeypatch
):
    # Found by perf/chaos.py: the checkpoint is written after the epoch's last batch, before
    # its evaluation; the resumed run must evaluate that epoch, not train the next one into it.
    assert run_training(config(tmp_path, synth_dir, "straight")) == 0
    cut = config(tmp_path, synth_dir, "cut")
    preempted_then_resumed(cut, monkeypatch, at_batch=20)  # pretrain: 10 batches per epoch
    want, got = (
        json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("straight", "cut")
    )
    for stage in want["stages"]:
        history = [(h["epoch"], h["loss"]) for h in got["stages"][stage].get("history", [])]
        assert history == [
            (h["epoch"], h["loss"]) for h in want["stages"][stage].get("history", [])
        ]
        assert got["stages"][stage]["test"] == want["stages"][stage]["test"], stage
