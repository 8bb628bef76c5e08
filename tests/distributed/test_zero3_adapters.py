"""PEFT adapters trained under ZeRO-3 are gathered whole for evaluation and saving:
the adapted stage's metrics and the saved adapter equal a single-process run's
(LoRA and AdaLoRA; AdaLoRA's budget reads gradients that ZeRO-3 partitions)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.launching import (
    TOL,
    check,
    metrics,
    parity_config,
    run_launch,
    run_single,
    write_config,
)

pytestmark = pytest.mark.integration


def adapt_config(data_dir, out, method: str, **sections) -> dict:
    cfg = parity_config(data_dir, out, **sections)
    cfg["data"]["domains"].append({"name": "even-b", "format": "prepared"})
    cfg["data"]["target"] = "even-b"
    cfg["stages"].update(pretrain={"epochs": 1}, adapt={"epochs": 2, "mode": "lora"})
    cfg["peft"] = {"method": method, "r": 4, "dropout": 0.0}
    if method == "adalora":
        cfg["peft"]["adalora"] = {"init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 2, "delta_t": 2}
    return cfg


def adapter_weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapters" / "even-b" / "adapter_model.safetensors"))


@pytest.mark.parametrize(("method", "port"), [("lora", 29651), ("adalora", 29652)])
def test_zero3_adapter_equals_single_process(method, port, target_dir, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "zero3"
    cfg = write_config(tmp_path / "s.yaml", adapt_config(target_dir, single, method))
    check(run_single(cfg, "data.num_workers=2", "train.grad_accum=2"))
    cfg = write_config(
        tmp_path / "z.yaml",
        adapt_config(target_dir, sharded, method, distributed={"strategy": "zero3"}),
    )
    check(run_launch("zero3", cfg, port))

    want, got = metrics(single)["stages"]["adapt"], metrics(sharded)["stages"]["adapt"]
    for split in ("valid", "test"):
        for key, value in want[split].items():
            assert got[split][key] == pytest.approx(value, abs=TOL), (split, key)
    a, b = adapter_weights(single), adapter_weights(sharded)
    assert a.keys() == b.keys()
    # gathered, not the empty ZeRO-3 shards (AdaLoRA may prune a module to rank 0 on
    # purpose: the rank pattern must then agree too)
    assert sum(t.numel() for t in b.values()) > 1000
    for key in a:
        assert b[key].shape == a[key].shape, key
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)
    want_cfg, got_cfg = (
        json.loads((run / "adapters" / "even-b" / "adapter_config.json").read_text())
        for run in (single, sharded)
    )
    assert got_cfg["rank_pattern"] == want_cfg["rank_pattern"]
    assert bool(got_cfg["rank_pattern"]) == (method == "adalora")


def test_saved_zero3_adapter_reloads_to_the_same_metrics(target_dir, tmp_path):
    """What a user does with the export: `distrec evaluate` rebuilds the base from its
    safetensors and loads the adapter with PeftModel.from_pretrained, in one process."""
    from distrec.train.inference import evaluate_run

    out = tmp_path / "zero3"
    cfg = write_config(
        tmp_path / "z.yaml",
        adapt_config(target_dir, out, "lora", distributed={"strategy": "zero3"}),
    )
    check(run_launch("zero3", cfg, 29653))
    text = evaluate_run(str(out), "even-b", "test")
    expected = metrics(out)["stages"]["adapt"]["test"]["ndcg@10"]
    assert f"ndcg@10    {expected:.4f}" in text
