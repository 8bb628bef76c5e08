"""Exact resume where users get hurt most: one of 2 ranks SIGKILLed mid-epoch while a
PEFT adapter trains on the LM itself (end-to-end mode) under DeepSpeed ZeRO, in bf16 with
every dropout on. `--resume auto` must end with the uninterrupted run's adapter weights,
AdaLoRA rank pattern, loss history and metrics.

Tolerance: none is needed. The checkpoint holds DeepSpeed's fp32 master weights and
optimizer state, every rank's RNG state, the stream positions and AdaLoRA's importance
scores, so the resumed run repeats the same float operations; the test asserts equality
(and reports max |delta| when it fails)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.launching import (
    check,
    metrics,
    rank_pid,
    run_launch,
    start_launch,
    wait_for,
    write_config,
)
from tests.distributed.test_zero3_adapters import adapt_config

pytestmark = pytest.mark.integration

# adapt: 160 users / 2 ranks / batch 16 = 5 steps per epoch, 2 epochs; checkpoint every 3.
KILL_AFTER = 6  # mid-epoch 2, after AdaLoRA's budget started moving and before it is final


def resume_config(data_dir, out, strategy: str, method: str) -> dict:
    """test_zero3_adapters' adaptation run, end to end on the LM, bf16, every dropout on."""
    cfg = adapt_config(
        data_dir,
        out,
        method,
        distributed={"strategy": strategy},
        model={
            "mode": "end_to_end",
            "max_text_tokens": 16,
            "lm_dropout": None,  # the checkpoint's own (0.1)
            "id_dropout": 0.1,
            "user_tower": {"layers": 1, "heads": 2, "dropout": 0.1},
        },
        train={"precision": "bf16", "checkpoint_every_steps": 3},
        eval={"batch_size": 64, "max_users": 64},
        output={"keep_last": 2},
    )
    cfg["peft"]["dropout"] = 0.1
    return cfg


def adapter(out) -> tuple[dict[str, torch.Tensor], dict]:
    folder = out / "adapters" / "even-b"
    config = json.loads((folder / "adapter_config.json").read_text())
    return load_file(str(folder / "adapter_model.safetensors")), config


# The suite runs the hardest case (ZeRO-3 partitions the LM and AdaLoRA's budget reads
# gradients it partitions); the others are one edit away and were run when this landed.
@pytest.mark.parametrize(("strategy", "method", "port"), [("zero3", "adalora", 29671)])
def test_sigkill_mid_epoch_under_zero_resumes_to_the_same_adapter(
    strategy, method, port, target_dir, tmp_path
):
    def config(name):
        cfg = resume_config(target_dir, tmp_path / name, strategy, method)
        return write_config(tmp_path / f"{name}.yaml", cfg)

    check(run_launch(strategy, config("straight"), port))
    cut_cfg, cut = config("cut"), tmp_path / "cut"
    launcher = start_launch(strategy, cut_cfg, port + 1)
    try:
        marker = cut / "checkpoints" / "adapt" / f"step-{KILL_AFTER:08d}" / "trainer.json"
        wait_for(marker.exists, 400, "a mid-epoch checkpoint of the adapt stage")
        victim = rank_pid(cut_cfg, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and not (cut / "metrics.json").exists(), stderr[-2000:]

    resumed = run_launch(strategy, cut_cfg, port + 2, "--resume", "auto")
    check(resumed)
    assert "adapt: resumed from step-" in resumed.stdout + resumed.stderr
    want, got = metrics(tmp_path / "straight")["stages"], metrics(cut)["stages"]
    for stage in ("pretrain", "adapt"):
        assert got[stage]["valid"] == want[stage]["valid"], stage
        assert got[stage]["test"] == want[stage]["test"], stage
        assert [h["loss"] for h in got[stage]["history"]] == [
            h["loss"] for h in want[stage]["history"]
        ], stage
    (a, a_cfg), (b, b_cfg) = adapter(tmp_path / "straight"), adapter(cut)
    assert a.keys() == b.keys() and sum(t.numel() for t in b.values()) > 1000
    delta = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].numel()}
    assert max(delta.values()) == 0.0, sorted(delta.items(), key=lambda kv: -kv[1])[:5]
    assert b_cfg["rank_pattern"] == a_cfg["rank_pattern"]
    assert bool(b_cfg["rank_pattern"]) == (method == "adalora")
