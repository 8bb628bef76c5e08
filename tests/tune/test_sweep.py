"""Real sweeps on the tiny synthetic domains: Ray Tune trials that are distrec runs.

Fault injection through DISTREC_TUNE_CRASH (distrec/tune/trainable.py); the driver is
a real `distrec tune` process, killed with SIGKILL for the resume test.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_run_config

pytestmark = pytest.mark.integration

METRIC = "valid.ndcg@10"


def sweep_config(tmp_path: Path, synth_dir: Path, epochs: int, **tune) -> Path:
    cfg = tiny_run_config(
        synth_dir,
        tmp_path / "unused",
        stages={
            "pretrain": {"enabled": False},
            "zero_shot": False,
            "adapt": {"enabled": False},
            "baselines": ["text_target_only"],
            "text_baseline_epochs": epochs,
        },
        # Patience beyond the budget: every trial runs its epochs unless the scheduler stops it.
        train={"early_stopping_patience": epochs + 1},
        output={"tensorboard": False},
    )
    cfg["data"]["sources"] = []
    cfg["tune"] = {
        "stage": "baseline_text_target_only",
        "search_space": {
            "train.lr": {"loguniform": [3e-4, 3e-3]},
            "model.temperature": {"choice": [0.05, 0.1]},
        },
        "scheduler": "fifo",
        "max_concurrent": 2,
        **tune,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tune_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distrec.cli", "tune", *args]


def env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "results.csv").open()))


def reports_of(out: Path) -> dict[str, list[dict]]:
    """Every result each trial reported to Ray, in order, across drivers and retries, keyed
    by the trial's folder name (`run_trial_<id>_<index>_<params>_<date>`)."""
    found = {}
    for result in sorted((out / "trials").glob("run_trial_*/result.json")):
        lines = result.read_text().splitlines()
        found[result.parent.name] = [json.loads(line) for line in lines if line.strip()]
    return found


def reported_epochs(out: Path) -> dict[str, list[int]]:
    return {t: [r["epoch"] for r in rs] for t, rs in reports_of(out).items()}


def test_crashed_trials_are_retried_from_checkpoints_and_best_yaml_reproduces(tmp_path, synth_dir):
    config = sweep_config(tmp_path, synth_dir, epochs=4, num_samples=3, max_failures=1)
    out = tmp_path / "sweep"
    # trial 0 crashes on every attempt (exhausts max_failures=1); trial 1 crashes once.
    proc = subprocess.run(
        tune_cmd("--config", str(config), "--out", str(out)),
        env=env(DISTREC_TUNE_CRASH="0@2*,1@2"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = {r["trial_id"].rsplit("_", 1)[1]: r for r in rows(out)}
    assert set(table) == {"00000", "00001", "00002"}
    assert table["00000"]["status"] == "error"  # the sweep went on without it
    assert table["00001"]["status"] == "completed" and table["00001"]["epochs"] == "4"
    assert table["00002"]["status"] == "completed" and table["00002"]["epochs"] == "4"
    reports = reports_of(out)
    retried = next(t for t in reports if "_00001_" in t)
    # Crashed after reporting epoch 2, restored from that checkpoint: nothing reported twice.
    assert [(r["epoch"], r["restores"]) for r in reports[retried]] == [
        (1, 0),
        (2, 0),
        (3, 1),
        (4, 1),
    ]
    failed = next(t for t in reports if "_00000_" in t)
    # Attempt 1 reports 1, 2 and crashes; attempt 2 resumes, reports 3 and crashes for good.
    assert [(r["epoch"], r["restores"]) for r in reports[failed]] == [(1, 0), (2, 0), (3, 1)]
    assert "1 failed" in proc.stdout and "| trial | status |" in proc.stdout

    # best.yaml retrains to the best trial's validation NDCG@10.
    from distrec.train.entry import run_training

    best = max((r for r in table.values() if r["status"] != "error"),
               key=lambda r: float(r["best_valid_ndcg@10"]))  # fmt: skip
    assert run_training(str(out / "best.yaml")) == 0
    metrics = json.loads((out / "best-run" / "metrics.json").read_text())
    retrained = metrics["stages"]["baseline_text_target_only"]["valid"]["ndcg@10"]
    assert abs(retrained - float(best["best_valid_ndcg@10"])) < 1e-4


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"driver exited early with {proc.returncode}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the sweep")


def test_killed_driver_resumes_unfinished_trials_from_their_checkpoints(tmp_path, synth_dir):
    epochs = 10
    # Optuna here (random search in the other test): its searcher state is restored too.
    config = sweep_config(
        tmp_path, synth_dir, epochs=epochs, num_samples=4, max_failures=0, search_alg="optuna"
    )
    out = tmp_path / "sweep"
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen(
        tune_cmd("--config", str(config), "--out", str(out)),
        env=env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes Ray's processes too
    )
    try:
        # Kill once some trial has reported two epochs: its first checkpoint is then
        # recorded in the experiment state, and the trial is mid-way.
        _wait_for(lambda: any(len(v) >= 2 for v in reported_epochs(out).values()), 150, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = reported_epochs(out)
    unfinished = [t for t, e in at_kill.items() if len(e) < epochs]
    assert unfinished, at_kill
    assert not (out / "results.csv").exists()

    resumed = subprocess.run(
        tune_cmd("--resume", str(out)), env=env(), capture_output=True, text=True, timeout=240
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    table = rows(out)
    assert len(table) == 4
    assert all(r["status"] == "completed" and r["epochs"] == str(epochs) for r in table), table
    final = reported_epochs(out)
    for trial, seen in final.items():
        # No trial started again from scratch: epoch 1 once, then forward only (a resumed
        # trial may repeat at most the epoch that was running when the driver died).
        assert seen.count(1) == 1, (trial, seen)
        assert sorted(set(seen)) == list(range(1, epochs + 1)), (trial, seen)
    assert set(at_kill) <= set(final)  # the same trials, not new ones in their place
    after = reports_of(out)
    for trial in unfinished:
        assert at_kill[trial] == final[trial][: len(at_kill[trial])]
        if at_kill[trial]:  # it had a checkpoint: what came after was restored from it
            assert all(r["restores"] == 1 for r in after[trial][len(at_kill[trial]) :])


@pytest.mark.slow
def test_a_trial_can_train_with_two_ray_train_workers(tmp_path, synth_dir):
    config = sweep_config(
        tmp_path,
        synth_dir,
        epochs=2,
        num_samples=1,
        max_concurrent=1,
        workers_per_trial=2,
        search_space={"train.lr": {"choice": [1e-3]}},
    )
    out = tmp_path / "sweep"
    proc = subprocess.run(
        tune_cmd("--config", str(config), "--out", str(out)),
        env=env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = rows(out)
    assert row["status"] == "completed" and row["epochs"] == "2"
    (result,) = (out / "trials").glob("run_trial_workers_*/result.json")
    reports = [json.loads(line) for line in result.read_text().splitlines() if line]
    assert [r["epoch"] for r in reports] == [1, 2]
    assert {r["world_size"] for r in reports} == {2}
    assert "Trials ran 2 processes each" in (out / "best.yaml").read_text()
