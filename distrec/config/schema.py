"""Typed run configuration: one pydantic model per section, composed into `RunConfig`.

Every section forbids unknown keys and coerces nothing silently (strict types),
so a typo or a wrong type in YAML is an error that names the key. A section
checks its own fields (its `model_validator`); `RunConfig` then runs the checks
that span sections (distrec/config/consistency.py). Checks that read the disk
live in distrec/config/environment.py, the launcher's in distrec/distributed/.
"""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from distrec.config.base import Section
from distrec.config.consistency import check_consistency
from distrec.config.data import ColumnMap, DataConfig, DomainConfig
from distrec.config.model import (
    AdaLoraConfig,
    DomainAdversarialConfig,
    KgConfig,
    ModelConfig,
    PeftConfig,
    UserTowerConfig,
)
from distrec.config.runtime import DistributedConfig, OutputConfig, TuneConfig
from distrec.config.training import (
    BASELINES,
    STAGES,
    AdaptConfig,
    DistillConfig,
    EvalConfig,
    StageConfig,
    StagesConfig,
    StudentConfig,
    TrainConfig,
)

__all__ = [
    "BASELINES",
    "STAGES",
    "AdaLoraConfig",
    "AdaptConfig",
    "ColumnMap",
    "DataConfig",
    "DistillConfig",
    "DistributedConfig",
    "DomainAdversarialConfig",
    "DomainConfig",
    "EvalConfig",
    "KgConfig",
    "ModelConfig",
    "OutputConfig",
    "PeftConfig",
    "RunConfig",
    "Section",
    "StageConfig",
    "StagesConfig",
    "StudentConfig",
    "TrainConfig",
    "TuneConfig",
    "UserTowerConfig",
]


DATA_ONLY = "data_only"  # validation context key: skip the checks across sections


class RunConfig(Section):
    """One run: data, model, adapters, stages, optimization, evaluation, launch, sweep, output."""

    seed: int = Field(default=0, description="Seed of every RNG (data order, init, dropout).")
    cache_dir: str = Field(
        default=".cache/distrec", description="Folder of caches shared by runs (LM item features)."
    )
    data: DataConfig = Field(default=DataConfig(), description="Domains and the training stream.")
    model: ModelConfig = Field(default=ModelConfig(), description="Item encoder, towers, scoring.")
    peft: PeftConfig = Field(default=PeftConfig(), description="Parameter-efficient adapters.")
    stages: StagesConfig = Field(default=StagesConfig(), description="Stages and baselines run.")
    train: TrainConfig = Field(default=TrainConfig(), description="Optimization.")
    eval: EvalConfig = Field(default=EvalConfig(), description="Ranking evaluation.")
    distributed: DistributedConfig = Field(
        default=DistributedConfig(), description="Launcher and process group."
    )
    tune: TuneConfig = Field(default=TuneConfig(), description="`distrec tune` sweeps.")
    output: OutputConfig = Field(default=OutputConfig(), description="The run folder.")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return moved_tensorboard(data)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> RunConfig:
        # `load_data_config` (data prepare) validates the data section only: the checks
        # across sections are the run's, and its other sections are defaults there.
        if not (info.context or {}).get(DATA_ONLY):
            check_consistency(
                data=self.data, model=self.model, peft=self.peft, stages=self.stages, tune=self.tune
            )
        return self

    def domain(self, name: str) -> DomainConfig:
        """The data.domains entry called `name`; KeyError listing the known names if none."""
        for d in self.data.domains:
            if d.name == name:
                return d
        known = [d.name for d in self.data.domains]
        raise KeyError(f"domain {name!r} is not in data.domains (known: {known})")


def moved_tensorboard(tree: Any) -> Any:
    """The config tree with the old `output.tensorboard: true|false` turned into
    `train.report_to: [tensorboard] | []` (with a FutureWarning naming the new key), so
    configs and stored runs written before train.report_to still run."""
    output = tree.get("output") if isinstance(tree, dict) else None
    if not isinstance(output, dict) or "tensorboard" not in output:
        return tree
    value = output["tensorboard"]
    train = tree.get("train") if isinstance(tree.get("train"), dict) else {}
    if not isinstance(value, bool) or "report_to" in train:
        raise ValueError(
            f"output.tensorboard={value!r} was replaced by train.report_to; remove it and "
            f"write train.report_to: [tensorboard] (or [] for no tracker)"
        )
    warnings.warn(
        f"output.tensorboard is deprecated: write train.report_to: "
        f"{'[tensorboard]' if value else '[]'} instead",
        FutureWarning,
        stacklevel=2,
    )
    rest = {k: v for k, v in output.items() if k != "tensorboard"}
    return {
        **tree,
        "output": rest,
        "train": {**train, "report_to": ["tensorboard"] if value else []},
    }
