"""Per-stage checkpoints: Accelerate's state plus the trainer's and each rank's data stream.

A checkpoint is written into a hidden temporary folder and renamed into place
only when every rank has finished writing, so a crash mid-save never leaves a
folder that looks complete; `trainer.json` (written last) marks completeness.
SIGTERM (preemption) asks the loop for one last checkpoint at the next step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

from distrec.distributed.collectives import any_rank, barrier
from distrec.distributed.env import rank_and_world

PREEMPTED = threading.Event()


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


class StageCheckpoints:
    """A stage's checkpoints under checkpoints/<stage>/, the newest `keep_last` kept."""

    def __init__(self, out: Path, stage: str, keep_last: int) -> None:
        self.root = out / "checkpoints" / stage
        self.keep_last = keep_last

    def save(self, accelerator, tag: str, trainer: dict, data: dict) -> Path:
        """Write checkpoint `tag`: Accelerate's state, this rank's stream `data`, `trainer` JSON."""
        rank, _ = rank_and_world()
        final = self.root / tag
        tmp = self.root / f".{tag}.tmp"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier()
        accelerator.save_state(str(tmp))
        (tmp / f"data-rank{rank}.json").write_text(json.dumps(data))
        barrier()
        if rank == 0:
            (tmp / "trainer.json").write_text(json.dumps(trainer))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._prune()
        barrier()
        return final

    def _prune(self) -> None:
        done = self.complete()
        for old in done[: max(0, len(done) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first (by the step recorded inside)."""
        if not self.root.exists():
            return []
        found = [
            p
            for p in self.root.iterdir()
            if p.name.startswith("step-") and (p / "trainer.json").exists()
        ]
        return sorted(
            found, key=lambda p: json.loads((p / "trainer.json").read_text())["global_batches"]
        )

    def latest(self) -> Path | None:
        """The newest complete checkpoint, if any."""
        done = self.complete()
        return done[-1] if done else None

    def restore(self, accelerator, path: Path) -> tuple[dict, dict]:
        """Load checkpoint `path` into the accelerator; returns (trainer JSON, stream state)."""
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
        accelerator.load_state(str(path))
        return json.loads((path / "trainer.json").read_text()), json.loads(data_file.read_text())
