"""Run-wide trainer hooks (`run_training(hooks=...)`); the `TrainHook` base class and its
hook points are in distrec.train.trainer, stage-specific hooks next to their stage."""

from __future__ import annotations

from collections.abc import Callable

from distrec.train.trainer import Trainer, TrainHook


class EpochReport(TrainHook):
    """Calls `report(stage, entry, last)` after every epoch's checkpoint, on every rank
    (how `distrec tune` reports to Ray Tune: the checkpoint is on disk by then)."""

    def __init__(self, report: Callable[[str, dict, bool], None]) -> None:
        self.report = report

    def on_epoch_end(self, trainer: Trainer, entry: dict, last: bool) -> None:
        """Pass the stage's name, the epoch's history record and `last` to `report`."""
        self.report(trainer.plan.name, entry, last)
