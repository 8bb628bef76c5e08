"""A consistent copy of Ray's experiment state, which `distrec tune --resume` restores from.

Ray saves its experiment state (trial statuses and checkpoints, the searcher's state, each
trial's result log) into a driver staging folder, then copies that folder to the storage
path in a background thread, file by file, skipping a copy while the previous one runs.
A driver killed during a copy leaves a torn state in storage (seen here): an empty
experiment_state file, a searcher state from another moment (Optuna then refused to
resume: "no search space has been defined"), or an experiment state older than the
checkpoints and result logs beside it (a trial whose checkpoint Ray had recorded started
again from scratch). Trial checkpoints themselves are written by the trials, straight to
storage, before the driver records them, so they are not affected.

`StateSnapshot`, a Ray callback, copies the staging folder's files after each driver step
in which a trial changed (Ray saves the state in that step, before the callbacks run) into
`<experiment>-resume-state`, written aside and renamed into place, unchanged files hard-
linked from the previous copy. `restore_snapshot` puts the newest complete copy back over
the storage folder before `Tuner.restore` reads it. Local (or shared-filesystem) storage
only: with a cloud URI Ray's own periodic sync is what there is.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

from ray.tune import Callback

SUFFIX = "-resume-state"


def snapshot_dir(experiment_dir: Path) -> Path:
    """Where the snapshot of the experiment in `experiment_dir` lives (beside it: Ray copies
    its experiment folder back into staging on a restore, and must not copy this too)."""
    return experiment_dir.with_name(experiment_dir.name + SUFFIX)


def _same_file(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    return (sa.st_size, sa.st_mtime_ns) == (sb.st_size, sb.st_mtime_ns)


def copy_tree(source: Path, dest: Path, previous: Path | None) -> None:
    """The files of `source` (one level of subfolders: the trials') into `dest`, each
    hard-linked from `previous` where it has not changed since, else copied."""
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(source)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        old = previous / rel if previous is not None else None
        if old is not None and old.is_file() and _same_file(path, old):
            os.link(old, target)
        else:
            shutil.copy2(path, target)  # keeps mtime: the next step's comparison


def write_snapshot(staging: Path, experiment_dir: Path) -> None:
    """Replace the snapshot of `experiment_dir` by a copy of `staging`: built in `.new`,
    then swapped in by renames (a kill at any point leaves a complete copy, current or
    `.old`)."""
    final = snapshot_dir(experiment_dir)
    new, old = final.with_name(final.name + ".new"), final.with_name(final.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    previous = final if final.is_dir() else None
    copy_tree(staging, new, previous)
    if previous is not None:
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def newest_snapshot(experiment_dir: Path) -> Path | None:
    """The complete snapshot of `experiment_dir`: the current one, else the one a kill
    caught between the two renames of `write_snapshot`; None if there is none."""
    final = snapshot_dir(experiment_dir)
    for candidate in (final, final.with_name(final.name + ".old")):
        if candidate.is_dir():
            return candidate
    return None


# The experiment-level files Ray writes per driver session; a snapshot replaces all of them.
STATE_FILES = (
    "experiment_state-*.json",
    "search_gen_state-*.json",
    "searcher-state-*.pkl",
    "basic-variant-state-*.json",
    "callback-states-*.pkl",
)


def restore_snapshot(experiment_dir: Path) -> bool:
    """Put the newest snapshot back over `experiment_dir` (trial checkpoints stay as they
    are); False when there is none (a sweep started before snapshots, or not local)."""
    snap = newest_snapshot(experiment_dir)
    if snap is None:
        return False
    for pattern in STATE_FILES:
        for stale in experiment_dir.glob(pattern):
            stale.unlink()
    for path in sorted(snap.rglob("*")):
        target = experiment_dir / path.relative_to(snap)
        if not path.is_file() or (target.is_file() and filecmp.cmp(path, target, shallow=False)):
            continue  # a file Ray's copy got right stays as it is
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".restoring")
        shutil.copy2(path, tmp)
        os.replace(tmp, target)
    return True


class StateSnapshot(Callback):
    """After each driver step in which a trial changed (created, reported, checkpointed,
    ended), `write_snapshot` of Ray's staged experiment state."""

    def __init__(self) -> None:
        self.seen: tuple = ()

    def setup(self, **info) -> None:
        """Ray's start (also after a restore: the unpickled copy starts afresh)."""
        self.seen = ()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        """Snapshot when the trials' statuses, results or checkpoints changed."""
        if not trials:
            return
        now = tuple(
            (t.trial_id, t.status, t.last_result.get("training_iteration"), repr(t.checkpoint))
            for t in trials
        )
        if now == self.seen:
            return
        storage = trials[0].storage
        write_snapshot(
            Path(storage.experiment_driver_staging_path), Path(storage.experiment_fs_path)
        )
        self.seen = now
