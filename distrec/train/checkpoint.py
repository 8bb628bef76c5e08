"""Per-stage checkpoints: Accelerate's state plus the trainer's and each rank's data stream.

A checkpoint is written into a hidden temporary folder and renamed into place only when
every rank has finished writing, so a crash or a full disk mid-save never leaves a folder
that looks complete, nor touches the previous checkpoints. `trainer.json` (the counters)
and then `manifest.json` (every other file's sha256) are written last, before the rename;
a resume checks the files against it and falls back to the previous checkpoint when the
newest is damaged. SIGTERM (preemption) asks the loop for one last checkpoint at the next
step.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distrec.config import ConfigError
from distrec.distributed.collectives import any_rank, barrier, broadcast_object, gather_objects
from distrec.distributed.env import rank_and_world
from distrec.utils.files import folder_bytes, no_space_cause, out_of_space_error, swap_into_place
from distrec.utils.hashing import mismatches, sha256_files
from distrec.utils.progress import log

logger = logging.getLogger(__name__)

PREEMPTED = threading.Event()
TRAINER = "trainer.json"
MANIFEST = "manifest.json"
HOOKS_FILE = "hooks.safetensors"  # train hooks' tensors (e.g. AdaLoRA's importance scores)
# Settings that give a checkpoint's counters their meaning: the stream's position and
# the epoch's length are counted in batches of train.batch_size, the optimizer steps (the
# learning-rate schedule, train.max_steps) in train.grad_accum batches each.
BATCHING_KEYS = ("batch_size", "grad_accum")


class Preempted(RuntimeError):
    """Raised after the final checkpoint of a preempted run has been written."""


def install_preemption_handler() -> None:
    """Make SIGTERM set PREEMPTED (see `preemption_requested`); a no-op off the main thread."""
    # Only the main thread may install handlers. A Ray Tune trial trains in a worker
    # thread; Ray stops and restores it itself (from the checkpoints reported per epoch).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: PREEMPTED.set())


def preemption_requested() -> bool:
    """True on every rank as soon as any rank got SIGTERM (a collective decision, so no
    rank leaves the others waiting in a collective)."""
    return any_rank(PREEMPTED.is_set())


@dataclass(frozen=True)
class _Failure:
    """What one rank reports of its failed part of a checkpoint write (picklable)."""

    rank: int
    message: str
    no_space_errno: int | None = None
    filename: str | None = None
    written: int = 0


def write_manifest(folder: Path) -> None:
    """Record the sha256 and size of every file under `folder` in folder/manifest.json."""
    names = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST
    )
    hashes = sha256_files(folder, names)
    files = {n: {"sha256": hashes[n], "bytes": (folder / n).stat().st_size} for n in names}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def damage(folder: Path) -> list[str] | None:
    """What is wrong with checkpoint `folder`'s files against its manifest (empty: nothing);
    None when it has no manifest (written before checkpoints carried one)."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        expected = {n: e["sha256"] for n, e in json.loads(path.read_text())["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return [f"{path}: unreadable ({err})"]
    return [
        f"{folder / d.name}: missing"
        if d.actual is None
        else f"{folder / d.name}: sha256 {d.actual}, the manifest records {d.expected}"
        for d in mismatches(folder, expected)
    ]


class StageCheckpoints:
    """A stage's checkpoints under checkpoints/<stage>/, the newest `keep_last` kept;
    `batch_size` and `grad_accum` (train.*) are recorded in each and must match on resume."""

    def __init__(
        self, out: Path, stage: str, keep_last: int, *, batch_size: int, grad_accum: int
    ) -> None:
        self.root = out / "checkpoints" / stage
        self.keep_last = keep_last
        self.batching = {"batch_size": batch_size, "grad_accum": grad_accum}

    # --- writing ----------------------------------------------------------------------

    def save(
        self,
        accelerator,
        tag: str,
        trainer: dict,
        data: dict,
        hooks: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Write checkpoint `tag`: Accelerate's state, this rank's stream `data`, `trainer`
        JSON, the train hooks' tensors `hooks` (rank 0's), the manifest. A failure on any
        rank (a full disk: OutOfSpace) removes the partial folder and raises on every rank;
        the previous checkpoints stay as they were."""
        rank, _ = rank_and_world()
        final, tmp = self.root / tag, self.root / f".{tag}.tmp"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier()

        def write_rank() -> None:
            accelerator.save_state(str(tmp))
            (tmp / f"data-rank{rank}.json").write_text(json.dumps(data))

        def commit() -> None:
            if rank == 0:
                save_file(hooks or {}, str(tmp / HOOKS_FILE))
                (tmp / TRAINER).write_text(json.dumps({**trainer, "batching": self.batching}))
                write_manifest(tmp)
                swap_into_place(tmp, final)
                self._prune()

        self._on_every_rank(tmp, final, write_rank)
        self._on_every_rank(tmp, final, commit)
        return final

    def _on_every_rank(self, tmp: Path, final: Path, write: Callable[[], None]) -> None:
        """Run this rank's part of writing `tmp`, then decide together: when it failed on
        any rank, the partial folder is removed and every rank raises (none is left waiting
        in a collective for a rank that gave up)."""
        rank, _ = rank_and_world()
        error: Exception | None = None
        try:
            write()
        except Exception as err:  # every failure, so the other ranks hear of it
            error = err
        report = None if error is None else _report(error, rank, tmp)
        failures = [f for f in gather_objects(report) if f is not None]
        if not failures:
            return
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier()  # the partial folder is gone before the free space is measured
        raised = self._failed(final, failures, error)
        if raised is error:
            raise error
        raise raised from error

    def _failed(self, final: Path, failures: list[_Failure], error: Exception | None) -> Exception:
        """The error every rank raises for a failed write of `final`: OutOfSpace when a
        rank's disk was full, else this rank's own error or one naming the rank that failed."""
        full = next((f for f in failures if f.no_space_errno is not None), None)
        if full is not None:
            cause = OSError(full.no_space_errno, os.strerror(full.no_space_errno), full.filename)
            return out_of_space_error(
                cause,
                final,
                written=max(f.written for f in failures),
                previous=self.latest_complete(),
                elsewhere="set output.dir to a disk with room (or lower output.keep_last)",
            )
        if error is not None:
            return error
        first = failures[0]
        return RuntimeError(
            f"checkpoint {final} was not written: rank {first.rank} failed ({first.message}); "
            f"the previous checkpoints are untouched"
        )

    def _prune(self) -> None:
        done = self.complete()
        for old in done[: max(0, len(done) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)

    # --- reading ----------------------------------------------------------------------

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first (their tags count the batches done)."""
        if not self.root.exists():
            return []
        found = [
            p for p in self.root.iterdir() if p.name.startswith("step-") and (p / TRAINER).exists()
        ]
        return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))

    def latest_complete(self) -> Path | None:
        """The newest complete checkpoint, unverified."""
        done = self.complete()
        return done[-1] if done else None

    def latest(self) -> Path | None:
        """The newest complete checkpoint whose files match its manifest, if any. Called on
        every rank (rank 0 checks, the others get its answer). Damaged newer ones are set
        aside as hidden `.corrupt-<tag>` folders with a warning; when every checkpoint is
        damaged, a ConfigError says which files and what to do."""
        rank, _ = rank_and_world()
        found: tuple[str | None, str | None] = (None, None)
        if rank == 0:
            try:
                chosen = self._verified_latest()
                found = (None if chosen is None else str(chosen), None)
            except ConfigError as err:
                found = (None, str(err))
        chosen, problem = broadcast_object(found)
        if problem is not None:
            raise ConfigError(problem)
        return None if chosen is None else Path(chosen)

    def _verified_latest(self) -> Path | None:
        damaged: list[tuple[Path, list[str]]] = []
        for path in reversed(self.complete()):
            found = damage(path)
            if found is None:
                log(f"{path}: written before checkpoints carried sha256 manifests; not verified")
            if not found:
                self._set_aside(damaged, path)
                return path
            damaged.append((path, found))
        if damaged:
            listed = "; ".join(f"{p.name}: {', '.join(d)}" for p, d in damaged)
            raise ConfigError(
                f"every checkpoint of {self.root} is damaged (corrupt or modified since it "
                f"was written: {listed}); delete the damaged checkpoint folders to train the "
                f"stage from its start, or put back intact copies"
            )
        return None

    def _set_aside(self, damaged: list[tuple[Path, list[str]]], resumed: Path) -> None:
        """Move damaged checkpoints newer than `resumed` out of the way, loudly."""
        for path, found in damaged:
            aside = path.with_name(f".corrupt-{path.name}")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            logger.warning(
                "checkpoint %s is DAMAGED (%s): moved to %s (delete it once inspected); "
                "resuming from the previous checkpoint %s",
                path,
                "; ".join(found),
                aside,
                resumed.name,
            )

    def restore(self, accelerator, path: Path) -> tuple[dict, dict]:
        """Load checkpoint `path` into the accelerator; returns (trainer JSON, stream state).
        Another world size, train.batch_size or train.grad_accum than the one it was written
        with is refused."""
        rank, world = rank_and_world()
        data_file = path / f"data-rank{rank}.json"
        if not data_file.exists():
            raise RuntimeError(
                f"{path} was written by a run with another world size (no {data_file.name}); "
                f"resume with the same number of processes, or start a new output.dir"
            )
        saved_world = len(list(path.glob("data-rank*.json")))
        if saved_world != world:
            raise RuntimeError(
                f"{path} was written by {saved_world} processes, this run has {world}: "
                f"resuming on another world size is not supported for the data stream; "
                f"relaunch with {saved_world} processes"
            )
        trainer = json.loads((path / TRAINER).read_text())
        self._check_batching(path, trainer.get("batching"))
        accelerator.load_state(str(path))
        return trainer, json.loads(data_file.read_text())

    def hook_tensors(self, path: Path) -> dict[str, torch.Tensor]:
        """The train hooks' tensors saved in checkpoint `path` (none in an older one)."""
        file = path / HOOKS_FILE
        return load_file(str(file)) if file.exists() else {}

    def _check_batching(self, path: Path, saved: dict | None) -> None:
        """Refuse a resume whose train.batch_size / grad_accum differ from the checkpoint's
        (one written before they were recorded is accepted)."""
        changed = [
            k for k in BATCHING_KEYS if saved and saved.get(k, self.batching[k]) != self.batching[k]
        ]
        if not changed:
            return
        was = ", ".join(f"train.{k}={saved[k]}" for k in changed)
        now = ", ".join(f"train.{k}={self.batching[k]}" for k in changed)
        raise ConfigError(
            f"{path} was written with {was}, this run has {now}: the checkpoint's stream "
            f"position and epoch length count batches of its train.batch_size, its optimizer "
            f"steps (learning-rate schedule, train.max_steps) train.grad_accum batches each; "
            f"resume with {was}, or start a new output.dir"
        )


def _report(error: Exception, rank: int, tmp: Path) -> _Failure:
    """This rank's failure as the others hear of it (out of space: with the bytes written)."""
    full = no_space_cause(error)
    if full is None:
        return _Failure(rank, f"{type(error).__name__}: {error}")
    filename = None if full.filename is None else str(full.filename)
    return _Failure(rank, str(full), full.errno, filename, folder_bytes(tmp))
