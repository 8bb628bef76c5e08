"""The `distributed`, `tune` and `output` sections: how a run is launched, swept and kept."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from distrec.config.base import Section
from distrec.config.metric_names import parse_metric


class DistributedConfig(Section):
    """What the run expects of the launcher and the process group."""

    strategy: Literal["auto", "single", "ddp", "zero2", "zero3", "zero3_offload", "fsdp"] = Field(
        default="auto",
        description=(
            "What the run expects the launcher to provide; `auto` accepts any. Checked against "
            "`launcher` before the run and against the live accelerator at start-up."
        ),
    )
    launcher: str | None = Field(
        default=None,
        description="The Accelerate YAML the run is launched with (see launch/), checked against `strategy`.",
    )
    timeout_s: int = Field(
        default=300,
        ge=5,
        description="Process-group timeout: how long ranks wait for a dead or stuck peer.",
    )
    cross_rank_negatives: bool = Field(
        default=True,
        description="Gather every rank's in-batch items as negatives (more negatives per step).",
    )


class TuneConfig(Section):
    """`distrec tune`: a Ray Tune sweep over this run config (see distrec/tune/).

    `search_space` maps dotted run-config keys to one spec each, e.g.
    `train.lr: {loguniform: [1e-4, 1e-2]}`; it is checked against the run config
    before Ray starts. `stage` names the stage whose per-epoch validation metric
    is reported to Ray (and that ASHA stops early).
    """

    search_space: dict[str, Any] = Field(
        default={},
        description=(
            "Dotted run-config key -> one spec ({choice|grid: [...]}, {uniform|loguniform|randint: "
            "[low, high]}), e.g. train.lr: {loguniform: [1e-4, 1e-2]}."
        ),
    )
    metric: str = Field(
        default="valid.ndcg@10",
        description="What trials are ranked by: valid.<metric>, a validation metric of `stage`.",
    )
    mode: Literal["max", "min"] = Field(default="max", description="Whether `metric` is maximized.")
    stage: Literal["pretrain", "adapt", "baseline_text_target_only", "baseline_id_target_only"] = (
        Field(default="adapt", description="The stage whose per-epoch metric is reported to Ray.")
    )
    scheduler: Literal["asha", "fifo"] = Field(
        default="asha", description="`asha` stops weak trials early; `fifo` runs every trial out."
    )
    search_alg: Literal["random", "optuna"] = Field(
        default="random",
        description="How configurations are sampled (optuna: TPE, optional dependency).",
    )
    num_samples: int = Field(default=8, ge=1, description="Trials (grid specs multiply them).")
    max_concurrent: int = Field(default=2, ge=1, description="Trials running at once.")
    cpus_per_trial: float = Field(default=1.0, gt=0.0, description="CPUs Ray reserves per trial.")
    gpus_per_trial: float = Field(default=0.0, ge=0.0, description="GPUs Ray reserves per trial.")
    workers_per_trial: int = Field(
        default=1,
        ge=1,
        description=">1: each trial is a Ray Train TorchTrainer with this many workers (one process group).",
    )
    max_failures: int = Field(
        default=1, ge=0, description="Restarts of a crashed trial from its last checkpoint."
    )
    grace_period: int = Field(
        default=1, ge=1, description="ASHA: epochs every trial runs before it can be stopped."
    )
    reduction_factor: int = Field(
        default=2, ge=2, description="ASHA: 1/reduction_factor of trials survive each rung."
    )
    storage: str | None = Field(
        default=None,
        description="Local folder or any URI Ray's storage layer reads (s3://, gs://, ...); null = --out.",
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        try:
            if not value.startswith("valid."):
                raise ValueError(value)
            parse_metric(value.removeprefix("valid."))
        except ValueError:
            raise ValueError(
                f"tune.metric={value!r}: expected valid.<metric> with <metric> recall@K, ndcg@K "
                f"or mrr@K (e.g. valid.ndcg@10)"
            ) from None
        return value


class OutputConfig(Section):
    """Where a run writes, and what it keeps."""

    dir: str = Field(
        default="runs/default",
        description="Run folder: checkpoints, metrics.json, report.md, logs.",
    )
    overwrite: bool = Field(
        default=False, description="Replace a finished run in `dir` instead of refusing."
    )
    keep_last: int = Field(
        default=2, ge=1, description="Checkpoints kept per stage (older are deleted)."
    )
