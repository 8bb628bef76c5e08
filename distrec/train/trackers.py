"""Experiment trackers (train.report_to), through Accelerate's own tracker classes.

Each writes into the run folder unless its own environment says otherwise: TensorBoard
`<out>/events`, wandb `<out>/wandb` (WANDB_DIR wins), MLflow the file store
`<out>/mlruns` (MLFLOW_TRACKING_URI wins), Aim the repo `<out>/aim`. Accelerate starts,
feeds and closes them on rank 0 only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from accelerate.tracking import (
    AimTracker,
    GeneralTracker,
    MLflowTracker,
    TensorBoardTracker,
    WandBTracker,
    on_main_process,
)

from distrec.config import ConfigError, RunConfig

INSTALL = {
    "tensorboard": "pip install tensorboard",
    "wandb": "pip install 'distrec[trackers]'",
    "mlflow": "pip install 'distrec[trackers]'",
    # Not in the trackers extra: aim pins filelock<4 and pulls botocore, which pins
    # python-dateutil<3; both would downgrade what torch and pandas run with.
    "aim": "pip install 'distrec[aim]'",
}


class StepRowWandB(WandBTracker):
    """wandb with the step as a value of each row: wandb's own step may only grow, but every
    stage counts its optimizer steps and epochs from 1 (so each metric keeps its x axis, as a
    TensorBoard tag does)."""

    @on_main_process
    def start(self) -> None:
        """Start the run; every metric is plotted against the `step` logged with it."""
        super().start()
        self.run.define_metric("step", hidden=True)
        self.run.define_metric("*", step_metric="step")

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        """Log `values` as one row, `step` among them."""
        self.run.log(values if step is None else {**values, "step": step}, **kwargs)


class RunFolderMLflow(MLflowTracker):
    """MLflow into `tracking_uri` (None: MLflow's own, e.g. MLFLOW_TRACKING_URI), with each
    `@` of a metric name (ndcg@10) written `_at_`: MLflow refuses `@` in names."""

    def __init__(self, tracking_uri: str | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tracking_uri = tracking_uri

    @on_main_process
    def start(self) -> None:
        """Point MLflow at the run's store, then start its run."""
        import mlflow

        if self.tracking_uri is not None:
            if self.tracking_uri.startswith("file:"):
                # MLflow 3 refuses its file store (maintenance mode) unless told it may; one
                # folder per run needs no database server or migration step.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri(self.tracking_uri)
        super().start()

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        """Log `values` under MLflow-valid names."""
        super().log({mlflow_name(k): v for k, v in values.items()}, step=step, **kwargs)


def mlflow_name(key: str) -> str:
    """A logged key as MLflow stores it: `adapt/valid_ndcg@10` -> `adapt/valid_ndcg_at_10`."""
    return key.replace("@", "_at_")


def run_name(cfg: RunConfig) -> str:
    """The name every tracker gives this run: the output folder's name."""
    return Path(cfg.output.dir).resolve().name


def check_trackers(cfg: RunConfig) -> None:
    """ConfigError naming each train.report_to tracker whose package is missing, with the
    pip command (Accelerate would skip it silently and the run would train untracked)."""
    from accelerate.utils import imports

    missing = [n for n in cfg.train.report_to if not getattr(imports, f"is_{n}_available")()]
    if missing:
        fixes = "; ".join(f"{n}: {INSTALL[n]}" for n in missing)
        raise ConfigError(
            f"train.report_to={cfg.train.report_to}: {missing} not installed (or a version "
            f"Accelerate does not support); {fixes}; or remove them from train.report_to"
        )


def build_trackers(cfg: RunConfig) -> list[GeneralTracker]:
    """One unstarted Accelerate tracker per train.report_to entry, aimed at the run folder."""
    out, name, project = Path(cfg.output.dir).resolve(), run_name(cfg), cfg.train.tracker_project
    makers = {
        "tensorboard": lambda: TensorBoardTracker("events", str(out)),
        "wandb": lambda: StepRowWandB(
            project, name=name, **({} if "WANDB_DIR" in os.environ else {"dir": str(out)})
        ),
        "mlflow": lambda: RunFolderMLflow(
            None if "MLFLOW_TRACKING_URI" in os.environ else f"file:{out / 'mlruns'}",
            experiment_name=project,
            run_name=name,
        ),
        "aim": lambda: AimTracker(name, str(out / "aim"), experiment=project),
    }
    return [makers[n]() for n in cfg.train.report_to]


def start_trackers(accelerator, cfg: RunConfig) -> None:
    """Start the accelerator's trackers (the run folder exists by now), the flattened run
    config as their hyper-parameters."""
    if cfg.train.report_to:
        accelerator.init_trackers(cfg.train.tracker_project, config=flat_config(cfg))


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The run config as `section.key` -> bool, int, float, str or None, which every tracker
    stores: lists are written as JSON text (`data.sources` -> '["ml-100k"]')."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = json.dumps(node) if isinstance(node, list | dict) else node

    walk(cfg.model_dump(mode="json"), "")
    return flat
