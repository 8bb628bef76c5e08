"""`accelerate launch -m distrec.train` with the CPU multi-process template: two real ranks."""

import json
import os
import subprocess

import pytest
import yaml

from tests.conftest import ROOT, python, tiny_run_config


@pytest.mark.integration
def test_two_process_run_through_the_launch_template(tmp_path, synth_dir):
    out = tmp_path / "run"
    cfg = tiny_run_config(
        synth_dir,
        out,
        stages={"pretrain": {"epochs": 1}, "adapt": {"epochs": 1}, "baselines": ["popularity"]},
        distributed={"strategy": "ddp", "launcher": "launch/cpu_multiprocess.yaml"},
    )
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            python(),
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "launch/cpu_multiprocess.yaml",
            "--num_processes",
            "2",
            "--main_process_port",
            "29633",
            "-m",
            "distrec.train",
            "--config",
            str(cfg_file),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["strategy"] == "ddp"
    stages = metrics["stages"]
    assert set(stages) == {
        "pretrain",
        "zero_shot",
        "adapt_lora",
        "adapt_full",
        "adapt",
        "baseline_popularity",
    }
    # stages.adapt.mode=auto (the default) keeps the better of the two on validation
    chosen = stages[f"adapt_{stages['adapt']['mode']}"]
    other = stages["adapt_full" if stages["adapt"]["mode"] == "lora" else "adapt_lora"]
    assert chosen["valid"]["ndcg@10"] >= other["valid"]["ndcg@10"]
    assert stages["adapt"]["test"] == chosen["test"]
    # rank-0-only logging: each stage result line appears once
    assert proc.stdout.count("adapt_lora: test ndcg@10") == 1
    assert proc.stdout.count("adapt (auto):") == 1


@pytest.mark.integration
def test_a_strategy_the_launcher_cannot_provide_is_refused(tmp_path, synth_dir):
    cfg = tiny_run_config(synth_dir, tmp_path / "run", distributed={"strategy": "zero3"})
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [python(), "-m", "distrec.train", "--config", str(cfg_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "distributed.strategy='zero3' but this launch provides 'single'" in proc.stderr
