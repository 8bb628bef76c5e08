"""Preempt a run mid-stage (SIGTERM path), resume it, and end exactly where an uninterrupted run ends."""

import json

import yaml

import distrec.train.trainer as loop
from distrec.train.checkpoint import PREEMPTED
from distrec.train.entry import run_training
from tests.conftest import tiny_run_config


def config(tmp_path, synth_dir, name):
    cfg = tiny_run_config(
        synth_dir,
        tmp_path / name,
        stages={"pretrain": {"epochs": 3}, "adapt": {"epochs": 2}, "baselines": ["popularity"]},
        output={"keep_last": 2},
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
