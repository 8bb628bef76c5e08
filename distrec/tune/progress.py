"""Driver-side sweep progress: one plain line per trial event (done / running / ETA / best).

Ray's own table is switched off (verbose=0): on a terminal it redraws, in a log it
floods; these lines read the same in both.
"""

from __future__ import annotations

import math
import time

from ray.tune import Callback

from distrec.utils.progress import log


class SweepProgress(Callback):
    """Also tells the driver whether the sweep ended or was interrupted (Ctrl-C): Ray then
    returns from fit() too, with the interrupted trials already marked terminated."""

    # The instance of the running sweep: after Tuner.restore Ray uses an unpickled copy.
    active: SweepProgress | None = None

    def __init__(self, total: int, metric: str, mode: str) -> None:
        self.total, self.metric, self.mode = total, metric, mode
        self.start = time.monotonic()
        self.best: float | None = None
        self.live: set[str] = set()

    def setup(self, **info) -> None:
        """Ray's start (also after a restore): reset the clock and the live trials, and
        register this instance as the `active` one."""
        self.start = time.monotonic()
        self.live = set()
        SweepProgress.active = self

    def unfinished(self) -> int:
        """Trials started by this driver that neither finished nor failed for good."""
        return len(self.live)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        """Count the trial as live; print it with its sampled params."""
        self.live.add(trial.trial_id)
        self._line(trials, f"started {trial.trial_id} {_params(trial.config)}", starting=trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """Track the best finite value of the sweep's metric so far (no line printed)."""
        value = result.get(self.metric)
        if not isinstance(value, float) or math.isnan(value):
            return
        if self.best is None or (value > self.best) == (self.mode == "max"):
            self.best = value

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        """Print whether the trial finished its stage or the scheduler stopped it, and when."""
        self.live.discard(trial.trial_id)
        last = trial.last_result or {}
        how = "finished" if last.get("final") else "stopped early"
        self._line(
            trials, f"{trial.trial_id} {how} after epoch {last.get('epoch', '?')}", ending=trial
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """Print that the trial failed with no retries left."""
        self.live.discard(trial.trial_id)
        self._line(trials, f"{trial.trial_id} failed for good (retries exhausted)", trial, True)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Print that the trial failed and Ray retries it from its last checkpoint."""
        self._line(trials, f"{trial.trial_id} failed; retrying from its last checkpoint")

    def _line(self, trials, event: str, ending=None, failed: bool = False, starting=None) -> None:
        # Ray calls the start/completion hooks before it updates that trial's status.
        others = [t for t in trials if t is not ending and t is not starting]
        done = sum(t.status in ("TERMINATED", "ERROR") for t in others) + (ending is not None)
        running = sum(t.status == "RUNNING" for t in others) + (starting is not None)
        errors = sum(t.status == "ERROR" for t in others) + failed
        elapsed = time.monotonic() - self.start
        total = max(self.total, len(trials))
        eta = ""
        if 0 < done < total:
            eta = f", ETA ~{elapsed / done * (total - done):.0f}s"
        best = f", best {self.metric} {self.best:.4f}" if self.best is not None else ""
        log(
            f"tune: {done}/{total} done ({errors} failed), {running} running, "
            f"{elapsed:.0f}s{eta}{best} | {event}"
        )


def _params(config: dict) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in config.items())


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
