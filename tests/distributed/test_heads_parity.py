"""Joint heads (retrieval + rating + ctr + preference) train the same on every backend: the
head modules run inside the wrapped forward, so DDP and ZeRO-3 (which partitions their
parameters) must reproduce the single-process loss curve and the heads' own validation
metrics, judged on held-out items sharded across ranks."""

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

HEADS = {"retrieval": 1.0, "rating": 0.5, "ctr": 0.5, "preference": 0.2}
JUDGED = ("rmse", "mae", "auc", "gauc", "logloss", "accuracy", "macro_f1")


def heads_config(prepared, out, **sections):
    cfg = parity_config(prepared, out, **sections)
    cfg["data"]["domains"] = [{"name": "even-rated", "format": "prepared"}]
    cfg["data"]["sources"] = ["even-rated"]
    cfg["model"]["heads"] = HEADS
    # Hard negatives only: sampled ones are drawn by each rank's own generator, so they could
    # not match a single process's draws; the model's own top-k are the same everywhere.
    cfg["model"].update(ctr_negatives=4, ctr_hard_negatives=4)
    return cfg


def judged(out) -> tuple[list[float], dict[str, float]]:
    stage = metrics(out)["stages"]["pretrain"]
    return [h["loss"] for h in stage["history"]], {k: stage["valid"][k] for k in JUDGED}


@pytest.fixture(scope="module")
def reference(rated_even_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heads-single")
    cfg = write_config(tmp / "c.yaml", heads_config(rated_even_dir, tmp / "run"))
    check(run_single(cfg, "data.num_workers=2", "train.grad_accum=2"))
    return judged(tmp / "run")


@pytest.mark.parametrize(("backend", "port"), [("ddp", 29671), ("zero3", 29672)])
def test_joint_heads_match_single_process(backend, port, reference, rated_even_dir, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        heads_config(rated_even_dir, tmp_path / "run", distributed={"strategy": backend}),
    )
    check(run_launch(backend, cfg, port))
    losses, valid = judged(tmp_path / "run")
    ref_losses, ref_valid = reference
    assert losses == pytest.approx(ref_losses, abs=TOL), (losses, ref_losses)
    for key in JUDGED:
        assert valid[key] == pytest.approx(ref_valid[key], abs=TOL), (key, valid, ref_valid)
