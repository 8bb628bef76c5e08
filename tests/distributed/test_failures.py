"""A crash never costs more than the steps since the last checkpoint and never hangs
the cluster: SIGKILL one rank and resume exactly; kill or freeze one rank and the
other exits non-zero within the collective timeout, saying which rank it is."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest
from safetensors.torch import load_file

from tests.distributed.launching import (
    alive,
    check,
    metrics,
    parity_config,
    rank_pid,
    run_launch,
    start_launch,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration

TIMEOUT_S = 10


def checkpoint_at(out, stage: str, batches: int):
    return lambda: (out / "checkpoints" / stage / f"step-{batches:08d}" / "trainer.json").exists()


def test_sigkill_of_one_rank_then_resume_ends_exactly_as_an_uninterrupted_run(
    even_dir,
    tmp_path,
):
    def config(name):
        cfg = parity_config(
            even_dir,
            tmp_path / name,
            distributed={"strategy": "ddp"},
            train={"checkpoint_every_steps": 3},
            output={"keep_last": 2},
        )
        cfg["stages"]["pretrain"]["epochs"] = 4
        return write_config(tmp_path / f"{name}.yaml", cfg)

    check(run_launch("ddp", config("straight"), 29661))
    cut_cfg, cut = config("cut"), tmp_path / "cut"
    launcher = start_launch("ddp", cut_cfg, 29662)
    try:
        # mid-epoch 2 (10 batches per epoch and rank)
        wait_for(checkpoint_at(cut, "pretrain", 15), 300, "a mid-epoch checkpoint")
        victim = rank_pid(cut_cfg, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and not (cut / "metrics.json").exists(), stderr[-2000:]

    resumed = run_launch("ddp", cut_cfg, 29663, "--resume", "auto")
    check(resumed)
    assert "pretrain: resumed from step-" in resumed.stdout + resumed.stderr
    want, got = metrics(tmp_path / "straight"), metrics(cut)
    assert got["stages"]["pretrain"]["valid"] == want["stages"]["pretrain"]["valid"]
    assert got["stages"]["pretrain"]["test"] == want["stages"]["pretrain"]["test"]
    losses = [h["loss"] for h in got["stages"]["pretrain"]["history"]]
    assert losses == pytest.approx(
        [h["loss"] for h in want["stages"]["pretrain"]["history"]], abs=1e-6
    )
    a = load_file(str(tmp_path / "straight" / "export" / "base" / "model.safetensors"))
    b = load_file(str(cut / "export" / "base" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= 1e-6, key


@pytest.mark.parametrize(("how", "port"), [(signal.SIGKILL, 29664), (signal.SIGSTOP, 29665)])
def test_a_dead_or_frozen_rank_never_hangs_the_other(how, port, even_dir, tmp_path):
    out = tmp_path / "run"
    cfg = parity_config(
        even_dir,
        out,
        distributed={"strategy": "ddp", "timeout_s": TIMEOUT_S},
        train={"checkpoint_every_steps": 3},
    )
    cfg["stages"]["pretrain"]["epochs"] = 200
    cfg_file = write_config(tmp_path / "c.yaml", cfg)
    launcher = start_launch("ddp", cfg_file, port)
    victim = None
    try:
        wait_for(checkpoint_at(out, "pretrain", 6), 300, "training to be under way")
        survivor, victim = rank_pid(cfg_file, 0), rank_pid(cfg_file, 1)
        assert survivor and victim
        os.kill(victim, how)
        t0 = time.monotonic()
        wait_for(lambda: not alive(survivor), TIMEOUT_S + 30, "the surviving rank to exit")
        elapsed = time.monotonic() - t0
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if victim:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        launcher.kill()
    assert launcher.returncode != 0
    assert elapsed <= TIMEOUT_S + 30
    if how == signal.SIGSTOP:  # the frozen rank cannot speak; the survivor names itself
        assert "rank 0 of 2: a collective with the other ranks failed" in stderr, stderr[-3000:]
        assert f"distributed.timeout_s={TIMEOUT_S}s" in stderr
    print(json.dumps({"signal": how.name, "survivor_exit_s": round(elapsed, 1)}))
