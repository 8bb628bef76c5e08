"""The consistent copy of Ray's experiment state that `distrec tune --resume` restores from.

The end-to-end case (a SIGKILLed driver, then --resume) is in test_sweep.py; these tests
pin what each piece does on plain folders.
"""

import os
from pathlib import Path
from types import SimpleNamespace

from distrec.tune.snapshot import (
    StateSnapshot,
    newest_snapshot,
    restore_snapshot,
    snapshot_dir,
    write_snapshot,
)

TRIAL = "run_trial_1_lr=0.001"


def staged(root: Path, step: int) -> Path:
    """A driver staging folder as Ray leaves it after `step` driver steps."""
    staging = root / "staging"
    (staging / TRIAL).mkdir(parents=True, exist_ok=True)
    (staging / "experiment_state-s1.json").write_text(f'{{"step": {step}}}')
    (staging / "searcher-state-s1.pkl").write_bytes(b"searcher %d" % step)
    if not (staging / "tuner.pkl").exists():  # Ray writes it once, at the start
        (staging / "tuner.pkl").write_bytes(b"tuner")
    lines = "".join(f'{{"epoch": {e}}}\n' for e in range(step))
    (staging / TRIAL / "result.json").write_text(lines)
    return staging


def test_a_snapshot_copies_the_staged_state_and_links_what_did_not_change(tmp_path):
    experiment = tmp_path / "trials"
    experiment.mkdir()
    write_snapshot(staged(tmp_path, 1), experiment)
    first = snapshot_dir(experiment)
    tuner_inode = (first / "tuner.pkl").stat().st_ino
    write_snapshot(staged(tmp_path, 2), experiment)
    snap = newest_snapshot(experiment)
    assert snap == first and not first.with_name(first.name + ".old").exists()
    assert (snap / "experiment_state-s1.json").read_text() == '{"step": 2}'
    assert (snap / TRIAL / "result.json").read_text().count("\n") == 2
    # Unchanged since the last step: the same file, hard-linked, not another copy.
    assert (snap / "tuner.pkl").stat().st_ino == tuner_inode
    assert (snap / "tuner.pkl").stat().st_nlink == 1  # the previous copy is gone


def test_a_kill_between_the_two_renames_leaves_the_previous_copy(tmp_path):
    experiment = tmp_path / "trials"
    experiment.mkdir()
    write_snapshot(staged(tmp_path, 1), experiment)
    final = snapshot_dir(experiment)
    # As a kill leaves it: the old copy renamed aside, the new one not yet in place.
    final.rename(final.with_name(final.name + ".old"))
    (final.with_name(final.name + ".new")).mkdir()
    snap = newest_snapshot(experiment)
    assert snap.name.endswith(".old")
    assert (snap / "experiment_state-s1.json").read_text() == '{"step": 1}'
    assert newest_snapshot(tmp_path / "elsewhere") is None


def test_restore_puts_the_saved_state_back_over_a_torn_copy(tmp_path):
    experiment = tmp_path / "trials"
    (experiment / TRIAL / "checkpoint_000001").mkdir(parents=True)
    (experiment / TRIAL / "checkpoint_000001" / "model.safetensors").write_bytes(b"weights")
    write_snapshot(staged(tmp_path, 3), experiment)
    # What a kill mid-copy leaves: an empty state, a searcher state of another session, a
    # result log behind; the tuner file Ray copied fine.
    (experiment / "experiment_state-s1.json").write_text("")
    (experiment / "searcher-state-s0.pkl").write_bytes(b"older session")
    (experiment / TRIAL / "result.json").write_text('{"epoch": 0}\n')
    (experiment / "tuner.pkl").write_bytes(b"tuner")
    os.utime(experiment / "tuner.pkl", ns=(1, 1))
    assert restore_snapshot(experiment)
    assert (experiment / "experiment_state-s1.json").read_text() == '{"step": 3}'
    assert not (experiment / "searcher-state-s0.pkl").exists()
    assert (experiment / "searcher-state-s1.pkl").read_bytes() == b"searcher 3"
    assert (experiment / TRIAL / "result.json").read_text().count("\n") == 3
    assert (experiment / "tuner.pkl").stat().st_mtime_ns == 1  # same bytes: left alone
    assert (experiment / TRIAL / "checkpoint_000001" / "model.safetensors").read_bytes() == (
        b"weights"
    )
    assert not restore_snapshot(tmp_path / "no-sweep")


def fake_trial(staging: Path, experiment: Path, iteration: int | None):
    storage = SimpleNamespace(
        experiment_driver_staging_path=str(staging), experiment_fs_path=str(experiment)
    )
    result = {} if iteration is None else {"training_iteration": iteration}
    return SimpleNamespace(
        trial_id="t1", status="RUNNING", last_result=result, checkpoint=None, storage=storage
    )


def test_the_callback_snapshots_only_when_a_trial_changed(tmp_path):
    experiment = tmp_path / "trials"
    experiment.mkdir()
    staging = staged(tmp_path, 1)
    callback = StateSnapshot()
    callback.setup()
    callback.on_step_end(iteration=1, trials=[])  # nothing to save yet
    assert newest_snapshot(experiment) is None
    callback.on_step_end(iteration=2, trials=[fake_trial(staging, experiment, None)])
    assert (snapshot_dir(experiment) / "experiment_state-s1.json").read_text() == '{"step": 1}'
    staged(tmp_path, 2)
    # The same trials in the same state: no copy (a step in which nothing happened).
    callback.on_step_end(iteration=3, trials=[fake_trial(staging, experiment, None)])
    assert (snapshot_dir(experiment) / "experiment_state-s1.json").read_text() == '{"step": 1}'
    callback.on_step_end(iteration=4, trials=[fake_trial(staging, experiment, 1)])
    assert (snapshot_dir(experiment) / "experiment_state-s1.json").read_text() == '{"step": 2}'
