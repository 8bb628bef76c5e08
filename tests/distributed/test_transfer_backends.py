"""The transfer techniques on every backend: knowledge-graph fusion (its entity table and
relation maps partitioned under ZeRO-3) and distillation (a plain teacher on every rank,
outside the wrapper) reproduce the single-process losses and metrics under DDP and ZeRO-3;
domain-adversarial pretraining runs under ZeRO-3 with its critic inside the wrapped forward."""

from __future__ import annotations

import pytest

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

STAGES = ("pretrain", "adapt", "distill")


def transfer_config(prepared, out, **sections):
    cfg = parity_config(prepared, out, **sections)
    kg = {"genre": "genre"}
    cfg["data"].update(
        domains=[
            {"name": "even", "format": "prepared", "kg_fields": kg},
            {"name": "even-tgt", "format": "prepared", "kg_fields": kg},
        ],
        sources=["even"],
        target="even-tgt",
    )
    cfg["model"]["kg"] = {"aggregate": "attention"}
    cfg["stages"] = {
        "pretrain": {"epochs": 1},
        "zero_shot": False,
        "adapt": {"epochs": 1, "mode": "full"},
        "baselines": [],
        "distill": {"enabled": True, "epochs": 1, "control": False, "student": {"dim": 16}},
    }
    return cfg


def curves(out) -> tuple[dict, float]:
    stages = metrics(out)["stages"]
    losses = {s: [h["loss"] for h in stages[s]["history"]] for s in STAGES}
    return losses, stages["distill"]["valid"]["ndcg@10"]


@pytest.fixture(scope="module")
def reference(even_pair_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer-single")
    cfg = write_config(tmp / "c.yaml", transfer_config(even_pair_dir, tmp / "run"))
    check(run_single(cfg, "data.num_workers=2", "train.grad_accum=2"))
    return curves(tmp / "run")


@pytest.mark.parametrize(("backend", "port"), [("ddp", 29681), ("zero3", 29682)])
def test_kg_and_distillation_match_single_process(
    backend, port, reference, even_pair_dir, tmp_path
):
    cfg = write_config(
        tmp_path / "c.yaml",
        transfer_config(even_pair_dir, tmp_path / "run", distributed={"strategy": backend}),
    )
    check(run_launch(backend, cfg, port))
    losses, valid = curves(tmp_path / "run")
    ref_losses, ref_valid = reference
    for stage in STAGES:
        assert losses[stage] == pytest.approx(ref_losses[stage], abs=TOL), (stage, losses)
    assert valid == pytest.approx(ref_valid, abs=TOL)


def test_adversarial_pretraining_under_zero3(even_pair_dir, tmp_path):
    cfg = transfer_config(even_pair_dir, tmp_path / "run", distributed={"strategy": "zero3"})
    cfg["model"]["domain_adversarial"] = {"weight": 0.5, "items": 16}
    cfg["stages"].update(adapt={"enabled": False}, distill={"enabled": False})
    check(run_launch("zero3", write_config(tmp_path / "c.yaml", cfg), 29683))
    pretrain = metrics(tmp_path / "run")["stages"]["pretrain"]
    assert 0.0 <= pretrain["history"][0]["domain_accuracy"] <= 1.0
    assert 0.0 <= pretrain["domain_probe"]["accuracy"] <= 1.0
