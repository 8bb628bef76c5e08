"""Real sweeps on the tiny synthetic domains: Ray Tune trials that are distrec runs.

Fault injection through DISTREC_TUNE_CRASH (distrec/tune/trainable.py); the driver is
a real `distrec tune` process, killed with SIGKILL for the resume test.
"""

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distrec.tune.snapshot import newest_snapshot
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
        report_to=[],
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


def reports_in(experiment: Path | None) -> dict[str, list[dict]]:
    """Every result each trial reported to Ray, in order, across drivers and retries, keyed
    by the trial's folder name (`run_trial_<id>_<index>_<params>_<date>`)."""
    found = {}
    for result in sorted(experiment.glob("run_trial_*/result.json") if experiment else []):
        lines = result.read_text().splitlines()
        found[result.parent.name] = [json.loads(line) for line in lines if line.strip()]
    return found


def reports_of(out: Path) -> dict[str, list[dict]]:
    return reports_in(out / "trials")


def saved_state(out: Path) -> Path | None:
    """The consistent copy of Ray's state that --resume starts from (tune/snapshot.py).
    Ray's own copy in trials/ can be torn by the kill; the tests reason about this one."""
    return newest_snapshot(out / "trials")


def saved_reports(out: Path) -> dict[str, list[dict]]:
    return reports_in(saved_state(out))


def epochs_of(reports: dict[str, list[dict]]) -> dict[str, list[int]]:
    return {t: [r["epoch"] for r in rs] for t, rs in reports.items()}


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
        try:
            if predicate():
                return
        except (OSError, ValueError):  # a file caught mid-write or mid-swap: look again
            pass
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
        # Kill once the saved state has a trial with two reports: Ray processes a trial's
        # next result only after recording its checkpoint, so that trial has one.
        _wait_for(lambda: any(len(v) >= 2 for v in saved_reports(out).values()), 150, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = epochs_of(saved_reports(out))
    unfinished = [t for t, e in at_kill.items() if len(e) < epochs]
    checkpointed = [t for t in unfinished if len(at_kill[t]) >= 2]
    assert checkpointed, at_kill
    assert not (out / "results.csv").exists()

    resumed = subprocess.run(
        tune_cmd("--resume", str(out)), env=env(), capture_output=True, text=True, timeout=240
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "consistent copy" in resumed.stdout
    table = rows(out)
    assert len(table) == 4
    assert all(r["status"] == "completed" and r["epochs"] == str(epochs) for r in table), table
    after = reports_of(out)
    final = epochs_of(after)
    for trial, seen in final.items():
        # No trial ran an epoch twice over, except one running at the kill (its checkpoint
        # came before it); a trial whose first checkpoint Ray had not recorded starts over.
        assert seen.count(1) == 1, (trial, seen)
        assert sorted(set(seen)) == list(range(1, epochs + 1)), (trial, seen)
    assert set(at_kill) <= set(final)  # the same trials, not new ones in their place
    for trial in checkpointed:
        # It had a checkpoint: what came after was restored from it.
        pairs = [(r["epoch"], r["restores"]) for r in after[trial]]
        assert final[trial][: len(at_kill[trial])] == at_kill[trial], (trial, pairs)
        assert all(n == 1 for _, n in pairs[len(at_kill[trial]) :]), (trial, at_kill, pairs)


def trial_statuses(out: Path) -> dict[str, str]:
    """Trial id -> status in the newest saved experiment state (what --resume reads)."""
    saved = saved_state(out)
    states = sorted(saved.glob("experiment_state-*.json")) if saved else []
    try:
        data = json.loads(states[-1].read_text())
        trials = [json.loads(state) for state, _ in data["trial_data"]]
    except (IndexError, ValueError, KeyError):  # none yet, or caught mid-write
        return {}
    return {t["trial_id"]: t["status"] for t in trials}


def contents(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def comparable(out: Path) -> dict[str, dict]:
    """results.csv by trial index, without what differs between sweeps (ids, wall time)."""
    drop = {"trial_id", "wall_s"}
    return {
        r["trial_id"].rsplit("_", 1)[1]: {k: v for k, v in r.items() if k not in drop}
        for r in rows(out)
    }


@pytest.mark.slow
def test_a_resumed_sweep_ends_with_the_uninterrupted_sweeps_table(tmp_path, synth_dir):
    # Two trials at once, of 2 and 30 epochs: the driver is killed once the short one has
    # finished (and Ray has saved that) while the long one is mid-way. An epoch of this tiny
    # model takes ~0.15 s on an idle machine, and Ray saves its state a moment after a trial
    # ends: the long trial needs enough epochs left to still be running then.
    long_epochs = 30
    config = sweep_config(
        tmp_path,
        synth_dir,
        epochs=long_epochs,
        num_samples=1,
        max_failures=0,
        search_space={
            "train.lr": {"loguniform": [3e-4, 3e-3]},
            "stages.text_baseline_epochs": {"grid": [2, long_epochs]},
        },
    )
    reference, out = tmp_path / "reference", tmp_path / "sweep"
    whole = subprocess.run(
        tune_cmd("--config", str(config), "--out", str(reference)),
        env=env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]

    proc = subprocess.Popen(
        tune_cmd("--config", str(config), "--out", str(out)),
        env=env(),
        stdout=(tmp_path / "driver.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes Ray's processes too
    )

    def short_done_long_running() -> bool:
        # Ray has saved one trial as ended, its reports agree, and the other has reported.
        saved_done = [t for t, s in trial_statuses(out).items() if s == "TERMINATED"]
        reports = list(saved_reports(out).values())
        final = [rs for rs in reports if rs and rs[-1]["final"]]
        return len(saved_done) == len(final) == 1 and sum(bool(rs) for rs in reports) == 2

    try:
        _wait_for(short_done_long_running, 150, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = saved_reports(out)
    (short,) = [t for t, rs in at_kill.items() if rs and rs[-1]["final"]]
    (long,) = [t for t in at_kill if t != short]
    assert len(at_kill[long]) < long_epochs, at_kill[long]
    # What the finished trial's folder holds once --resume has put the saved state back.
    short_files = {**contents(out / "trials" / short), **contents(saved_state(out) / short)}

    resumed = subprocess.run(
        tune_cmd("--resume", str(out), "--verbose"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # The same trials (configs sampled before the kill), the same final metrics, bit for bit.
    assert comparable(out) == comparable(reference)
    assert {r["status"] for r in rows(out)} == {"completed"}
    # The finished trial was not run again: no file in its folder changed since.
    assert contents(out / "trials" / short) == short_files
    after = reports_of(out)[long]
    assert after[: len(at_kill[long])] == at_kill[long]
    # The rest came from its last checkpoint (at most the epoch running at the kill again).
    assert after[-1]["epoch"] == long_epochs
    assert {r["restores"] for r in after[len(at_kill[long]) :]} == {1}
    assert "baseline_text_target_only: resumed from step-" in resumed.stdout
    again = subprocess.run(
        tune_cmd("--resume", str(out)), env=env(), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def _same_metrics(a: dict, b: dict) -> dict:
    """The keys whose values differ between two epoch reports (training loss, validation)."""
    keys = [k for k in a if k == "loss" or k.startswith("valid.")]
    return {k: (a[k], b[k]) for k in keys if a[k] != b[k]}


@pytest.mark.slow
def test_a_killed_worker_of_a_two_worker_trial_resumes_to_the_uncrashed_metrics(
    tmp_path, synth_dir
):
    epochs = 3
    # Two trials of one config: trial 0 runs through, trial 1's rank 1 is SIGKILLed after
    # epoch 2 (rank 0 is then left inside a collective). Half a CPU per worker: both trials'
    # four workers fit the 2 cores at once.
    config = sweep_config(
        tmp_path,
        synth_dir,
        epochs=epochs,
        num_samples=2,
        max_failures=1,
        workers_per_trial=2,
        cpus_per_trial=0.5,
        search_space={"train.lr": {"choice": [1e-3]}},
    )
    out = tmp_path / "sweep"
    proc = subprocess.run(
        tune_cmd("--config", str(config), "--out", str(out), "--verbose"),
        env=env(DISTREC_TUNE_CRASH="1@2!"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert all(r["status"] == "completed" and r["epochs"] == str(epochs) for r in rows(out))
    reports = {t.split("_")[4]: rs for t, rs in reports_of(out).items()}
    clean, crashed = reports["00000"], reports["00001"]
    assert [(r["epoch"], r["restores"]) for r in clean] == [(1, 0), (2, 0), (3, 0)]
    # Restarted by Ray Train from the epoch-2 checkpoint: epoch 3 once, nothing repeated.
    assert [(r["epoch"], r["restores"]) for r in crashed] == [(1, 0), (2, 0), (3, 1)]
    # Both trials trained on two Ray Train workers (the crashed one after its restart too).
    assert {r["world_size"] for r in clean + crashed} == {2}
    assert "Trials ran 2 processes each" in (out / "best.yaml").read_text()
    assert "DISTREC_TUNE_CRASH: killing rank 1 after epoch 2" in log
    assert re.search(r"baseline_text_target_only: resumed from step-\d+ \(epoch 3, 0 batches", log)
    # The restored run is the uncrashed one, bit for bit: weights, optimizer, RNGs and the
    # data stream's position come back from the checkpoint, the epoch loss is a float64 sum.
    for a, b in zip(clean, crashed, strict=True):
        assert _same_metrics(a, b) == {}, (a["epoch"], _same_metrics(a, b))
