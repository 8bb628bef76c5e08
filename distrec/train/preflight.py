"""Everything checkable about a run before it starts: files, launcher, registered names.

One function for every entry that runs (`distrec train`, `config validate`, `tune`, the
demo, perf drivers), so a config that one of them refuses none of them accepts;
`data prepare`, which reads only the data section, runs its data half (`preflight_data`).
"""

from __future__ import annotations

from pathlib import Path

from distrec.config import ConfigError, RunConfig, check_environment
from distrec.config.environment import check_data_files
from distrec.config.metric_names import RANKING_KINDS, parse_metric
from distrec.data.prepare import check_data_names
from distrec.distributed.launcher import check_launcher
from distrec.heads import HEADS
from distrec.heads.base import reporting_head, target_heads
from distrec.models.registry import MODELS
from distrec.train.stages.registry import planned_stages
from distrec.train.stages.runner import run_stages  # noqa: F401  (registers the built-in stages)
from distrec.train.trackers import check_trackers
from distrec.utils.plugins import load_plugins


def check_registered(cfg: RunConfig) -> None:
    """ConfigError naming the key and the registered names for an unknown head (model.heads,
    stages.adapt.heads), model.architecture or stages.extra entry, and for an eval.metric
    no trained head reports."""
    for name in cfg.model.heads:
        HEADS.get(name, "model.heads")
    for name in target_heads(cfg):
        HEADS.get(name, "stages.adapt.heads")
    MODELS.get(cfg.model.architecture)
    planned_stages(cfg)
    check_metric_is_reported(cfg)


def check_metric_is_reported(cfg: RunConfig) -> None:
    """A head's metric as eval.metric needs that head in every trained stage's heads."""
    metric = cfg.eval.metric
    if parse_metric(metric).kind in RANKING_KINDS:
        return
    head = reporting_head(metric)
    if head is None:
        reported = sorted({m for n in HEADS.names() for m in HEADS.get(n).reports})
        raise ConfigError(
            f"eval.metric={metric!r}: no registered head reports it; ranking metrics "
            f"(ndcg@K, recall@K, mrr@10) or a head's metric: {reported}"
        )
    stages = {"model.heads": cfg.model.heads, "stages.adapt.heads": target_heads(cfg)}
    for key, heads in stages.items():
        if head not in heads:
            raise ConfigError(
                f"eval.metric={metric!r} is the {head!r} head's, but {key}={dict(heads)} does "
                f"not train it; add {head!r} there or pick a metric of a trained head"
            )


def preflight(cfg: RunConfig) -> list[str]:
    """Load DISTREC_PLUGINS, then check data files, item encoder, launcher, dataset formats,
    registered names and tracker packages; raises ConfigError, returns notes worth printing."""
    load_plugins()  # every process imports the user's registrations itself
    notes = check_environment(cfg)
    check_trackers(cfg)
    check_launcher(cfg)
    check_data_names(cfg)
    check_registered(cfg)
    return notes


def preflight_data(cfg: RunConfig) -> None:
    """`preflight`'s checks for `distrec data prepare` (a config from `load_data_config`):
    load DISTREC_PLUGINS, then check the data files and dataset formats; raises ConfigError."""
    load_plugins()
    check_data_files(cfg, Path.cwd())
    check_data_names(cfg)
