"""Stages by name: the extension point for a new stage.

A stage is a function `run(pipe: Pipeline) -> None` that trains and/or evaluates
and stores its record(s) in `pipe.results`. Built-in stages register with an
`enabled(cfg)` rule (their own config turns them on) and run by their `order`; a contributed stage registers without one and runs when named in
`stages.extra`, after the built-ins (README "Extending distrec").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distrec.config import ConfigError, RunConfig
from distrec.utils.registry import Registry

if TYPE_CHECKING:  # annotation only (the pipeline does not import this module)
    from distrec.train.stages.pipeline import Pipeline

StageFn = Callable[["Pipeline"], None]


@dataclass(frozen=True)
class StageSpec:
    """A registered stage; `enabled` None means it runs only when named in stages.extra."""

    run: StageFn
    enabled: Callable[[RunConfig], bool] | None = None
    order: int = 0


STAGES: Registry[StageSpec] = Registry("stage", "stages.extra")


def register_stage(
    name: str, enabled: Callable[[RunConfig], bool] | None = None, order: int = 0
) -> Callable[[StageFn], StageFn]:
    """Decorator: `@register_stage("my_stage")` above `def my_stage(pipe): ...`. Built-ins
    pass `enabled` and their place in the run (`order`, ascending)."""

    def add(fn: StageFn) -> StageFn:
        STAGES.add(name, StageSpec(fn, enabled, order))
        return fn

    return add


def planned_stages(cfg: RunConfig) -> list[str]:
    """Names of the stages this config runs, in order: enabled built-ins, then stages.extra."""
    builtin = sorted(
        (n for n in STAGES.names() if STAGES.get(n).enabled is not None),
        key=lambda n: STAGES.get(n).order,
    )
    for name in cfg.stages.extra:
        if name in builtin:
            raise ConfigError(
                f"stages.extra: {name!r} is a built-in stage, enabled by its own config "
                f"(stages.{name} / stages.baselines); remove it from stages.extra"
            )
        STAGES.get(name)  # ConfigError naming the registered ones
    on = [n for n in builtin if STAGES.get(n).enabled(cfg)]
    return [*on, *cfg.stages.extra]
