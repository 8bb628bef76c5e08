"""One trial = one real `distrec train` run with the sampled overrides.

The run lives in the trial's working directory (`run/`; Ray gives each trial its own,
on whichever node runs it). After every epoch of the swept stage, the Trainer's
`EpochReport` hook calls back once its own checkpoint is on disk, and the trial reports
`valid.<metric>` for that epoch with the whole run folder as the Ray checkpoint (the
trial's `checkpoint_*/` in sweep storage is that folder). A retried or restored trial
gets the folder back and continues through distrec's resume path (`--resume auto`:
finished stages from stages.json, the running stage from its newest epoch checkpoint),
so it never starts again from scratch; it reports `restores`, how often that happened.

Fault injection (tests only): `DISTREC_TUNE_CRASH="I@E[,I@E...]"` makes trial number I
(Ray's creation order from 0; random search, whose trial ids carry it) raise right after
reporting epoch E on its first attempt; `I@E*` makes it raise on every attempt, after the
first epoch >= E it reports; `I@E!` kills a process instead (SIGKILL, first attempt): the
trial's, or in a multi-worker trial its last worker's, the others left mid-collective.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distrec.tune.space import apply_params

CRASH_ENV = "DISTREC_TUNE_CRASH"
RESTORES_FILE = "tune-restores"


class InjectedCrash(RuntimeError):
    """Raised by the test-only fault injection."""


@dataclass(frozen=True)
class TrialSpec:
    """What every trial shares: the run-config tree (paths made absolute by the driver),
    the stage it reports, and how many torch threads it trains with."""

    tree: dict[str, Any]
    stage: str
    threads: int
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0
    # Multi-worker trials: where Ray Train keeps each trial's run (sweep storage/train).
    train_storage: str = ""


def trial_index(trial_id: str) -> int | None:
    """Ray's trial ids end in the creation index under random search (`3f2a1_00004` -> 4);
    searchers such as Optuna hand out bare hex ids (None: fault injection does not apply)."""
    head, _, tail = trial_id.rpartition("_")
    return int(tail) if head and tail.isdigit() else None


def epoch_metrics(history_entry: dict, last: bool, restores: int) -> dict[str, Any]:
    """What a trial reports per epoch: every validation metric as `valid.<name>`."""
    out = {f"valid.{k}": float(v) for k, v in history_entry["valid"].items()}
    out.update(
        epoch=int(history_entry["epoch"]),
        loss=float(history_entry["loss"]),
        final=last,
        restores=restores,
    )
    return out


@dataclass(frozen=True)
class CrashPlan:
    """When the test-only fault injection fires for one trial, and how."""

    epoch: int
    every_attempt: bool = False  # `*`: at every epoch >= `epoch`, on every attempt
    kill: bool = False  # `!`: SIGKILL a process rather than raise

    def fires(self, epoch: int, restores: int) -> bool:
        """Whether it fires after reporting `epoch` (`restores`: the attempt's restores so far)."""
        return (
            epoch >= self.epoch if self.every_attempt else (epoch == self.epoch and restores == 0)
        )


def crash_plan(trial: int | None) -> CrashPlan | None:
    """The crash trial number `trial` must suffer, if the env asks for one."""
    for part in filter(None, os.environ.get(CRASH_ENV, "").split(",")):
        index, _, epoch = part.partition("@")
        if trial is not None and int(index) == trial:
            return CrashPlan(int(epoch.rstrip("*!")), epoch.endswith("*"), epoch.endswith("!"))
    return None


def inject_crash(plan: CrashPlan, epoch: int, rank: int, world: int) -> None:
    """Carry out `plan` after reporting `epoch` on this process (rank `rank` of `world`)."""
    if not plan.kill:
        raise InjectedCrash(f"{CRASH_ENV}: injected crash after epoch {epoch}")
    if rank == world - 1:
        print(f"[distrec] {CRASH_ENV}: killing rank {rank} after epoch {epoch}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def prepare_run_dir(run_dir: Path, checkpoint) -> tuple[str | None, int]:
    """Restore `checkpoint` (a Ray checkpoint or None) into `run_dir`. Returns distrec's
    resume mode and how many times this trial's run has now been restored."""
    # A folder left by an attempt that crashed before its first checkpoint holds nothing
    # worth keeping, and the checkpoint (when there is one) is the state to continue from.
    shutil.rmtree(run_dir, ignore_errors=True)
    if checkpoint is None:
        return None, 0
    checkpoint.to_directory(str(run_dir))
    counter = run_dir / RESTORES_FILE
    restores = (int(counter.read_text()) if counter.exists() else 0) + 1
    counter.write_text(str(restores))  # travels with the next checkpoint
    return "auto", restores


def write_trial_config(
    folder: Path, spec: TrialSpec, params: dict[str, Any], run_dir: Path
) -> Path:
    """`folder`/trial.yaml: the spec's tree with `params` applied, no tune section, the
    trial's threads pinned and output.dir = `run_dir`; written atomically."""
    tree = apply_params(spec.tree, params)
    tree.pop("tune", None)
    # Pinned for every trial and kept in best.yaml: float sums, so metrics, depend on it.
    tree["train"] = {**tree.get("train", {}), "threads": spec.threads}
    # keep_last=1: each Ray checkpoint is a copy of the run folder, older epochs add nothing.
    tree["output"] = {**tree.get("output", {}), "dir": str(run_dir), "keep_last": 1}
    path = folder / "trial.yaml"
    # Every worker of a multi-worker trial writes the same file: rename, so none reads half.
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(tree, sort_keys=False))
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class TrialRun:
    """Where one trial (or one worker of a multi-worker trial) runs, and how it starts."""

    folder: Path  # the trial's working directory: trial.yaml, and the run in run/
    trial: int | None  # trial_index's answer (fault injection)
    resume: str | None  # prepare_run_dir's answer: distrec's resume mode ...
    restores: int  # ... and how often this trial's run has been restored
    rank: int = 0  # this worker's rank in a multi-worker trial (fault injection)
    world: int = 1

    @property
    def run_dir(self) -> Path:
        """The distrec run folder (output.dir), also the trial's Ray checkpoint."""
        return self.folder / "run"


def run_trial(params: dict[str, Any], spec: TrialSpec) -> None:
    """Ray Tune function trainable (bound to `spec` with tune.with_parameters)."""
    from ray import tune

    # Ray starts each trial in its own working directory (RAY_CHDIR_TO_TRIAL_DIR).
    folder = Path.cwd()
    resume, restores = prepare_run_dir(folder / "run", tune.get_checkpoint())
    run = TrialRun(folder, trial_index(tune.get_context().get_trial_id()), resume, restores)

    def report(metrics: dict) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(run.run_dir)))

    train_one(params, spec, run, report)


def train_one(params: dict[str, Any], spec: TrialSpec, run: TrialRun, report, settle=None) -> None:
    """The distrec run of one trial (or of one worker of a multi-worker trial); `report`
    takes each epoch's metrics; `settle` (if given) runs before an injected crash."""
    from distrec.train.entry import run_training
    from distrec.train.hooks import EpochReport

    config = write_trial_config(run.folder, spec, params, run.run_dir)
    crash = crash_plan(run.trial)

    def on_epoch(stage: str, entry: dict, last: bool) -> None:
        if stage != spec.stage:
            return
        report(epoch_metrics(entry, last, run.restores))
        if crash is not None and crash.fires(entry["epoch"], run.restores):
            if settle is not None:
                settle()
            inject_crash(crash, entry["epoch"], run.rank, run.world)

    code = run_training(str(config), resume=run.resume, hooks=[EpochReport(on_epoch)])
    if code != 0:
        raise RuntimeError(f"distrec training exited with {code} (run folder {run.run_dir})")


def run_trial_workers(params: dict[str, Any], spec: TrialSpec) -> None:
    """A trial of `spec.workers` processes: a Ray Train TorchTrainer (one gloo/NCCL process
    group, the workers' ranks are distrec's ranks) driven from this Tune trial.

    Metrics reach Tune through Ray Train's TuneReportCallback; checkpoints are Ray Train's,
    in `<sweep storage>/train/train-<trial id>`. A retried trial builds a trainer with the
    same name and storage, and Ray Train (v2) continues that run from its latest
    checkpoint. The workers share the trial's working directory: one node, or a shared
    filesystem, as any multi-process distrec run needs.
    """
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    folder = Path.cwd()
    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "params": params,
            "spec": spec,
            "folder": str(folder),
            "trial": trial_index(trial_id),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.workers,
            use_gpu=spec.gpus_per_worker > 0,
            resources_per_worker={"CPU": spec.cpus_per_worker, "GPU": spec.gpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=spec.train_storage,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()


def _worker_loop(config: dict) -> None:
    import ray.train

    from distrec.distributed.collectives import broadcast_object, world_size

    spec: TrialSpec = config["spec"]
    folder = Path(config["folder"])
    rank = ray.train.get_context().get_world_rank()
    # One run folder shared by the workers (one node here; a shared filesystem on a
    # cluster, as for any multi-process distrec run): rank 0 restores it, the others wait.
    restored = prepare_run_dir(folder / "run", ray.train.get_checkpoint()) if rank == 0 else None
    resume, restores = broadcast_object(restored, src=0)
    run = TrialRun(folder, config["trial"], resume, restores, rank, world_size())

    def report(metrics: dict) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(run.run_dir)) if rank == 0 else None
        # Measured, not configured: shows the trial really trained as one process group.
        metrics["world_size"] = world_size()
        ray.train.report(metrics, checkpoint=ckpt)

    train_one(config["params"], spec, run, report, settle=_reports_taken)


def _reports_taken() -> None:
    """Wait until Ray Train's controller has taken every worker's reports (fault injection).

    The controller takes one report per worker and poll (every 2 s), and drops those still
    queued once a worker fails: a crash right after a report would lose that epoch's
    checkpoint on some runs and not on others. Ray's internal queue (Ray 2.60): the
    controller marks each report it takes done, so `join` returns once it took them all.
    """
    from ray.train.v2._internal.execution.context import get_train_context

    from distrec.distributed.collectives import barrier

    get_train_context().execution_context.result_queue.join()
    barrier()
