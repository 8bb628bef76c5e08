"""Everything checkable about a run before it starts: files, launcher, registered names.

One function for every entry (`distrec train`, `config validate`, `data prepare`, `tune`,
the demo, perf drivers), so a config that one of them refuses none of them accepts.
"""

from __future__ import annotations

from distrec.config import RunConfig, check_environment
from distrec.data.prepare import check_data_names
from distrec.distributed.launcher import check_launcher
from distrec.models.registry import MODELS
from distrec.train.losses import LOSSES
from distrec.train.stages.registry import planned_stages
from distrec.train.stages.runner import run_stages  # noqa: F401  (registers the built-in stages)
from distrec.utils.plugins import load_plugins


def check_registered(cfg: RunConfig) -> None:
    """ConfigError naming the key and the registered names for an unknown model.head,
    model.architecture or stages.extra entry."""
    LOSSES.get(cfg.model.head)
    MODELS.get(cfg.model.architecture)
    planned_stages(cfg)


def preflight(cfg: RunConfig) -> list[str]:
    """Load DISTREC_PLUGINS, then check data files, item encoder, launcher, dataset formats
    and registered names; raises ConfigError, returns notes worth printing."""
    load_plugins()  # every process imports the user's registrations itself
    notes = check_environment(cfg)
    check_launcher(cfg)
    check_data_names(cfg)
    check_registered(cfg)
    return notes
