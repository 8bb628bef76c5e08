"""Check, before anything runs, that every registered name a config uses exists."""

from __future__ import annotations

from distrec.config import RunConfig
from distrec.models.registry import MODELS
from distrec.train.losses import LOSSES
from distrec.train.stages.registry import planned_stages
from distrec.train.stages.runner import run_stages  # noqa: F401  (registers the built-in stages)


def check_registered(cfg: RunConfig) -> None:
    """ConfigError naming the key and the registered names for an unknown model.head,
    model.architecture or stages.extra entry."""
    LOSSES.get(cfg.model.head)
    MODELS.get(cfg.model.architecture)
    planned_stages(cfg)
