"""`distrec tune`: check the sweep, warm shared caches, build and run (or restore) the Tuner.

A sweep folder (`--out`) holds `sweep.json` (what was asked: config, overrides, the
resolved run-config tree), Ray's experiment (`trials/`, unless `tune.storage` points
elsewhere) and, at the end, results.csv, best.yaml, sweep.png and summary.md.
`distrec tune --resume DIR` reads sweep.json and continues with `Tuner.restore`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from distrec.config import ConfigError, RunConfig
from distrec.config.load import apply_override, config_from_dict, read_yaml
from distrec.config.metric_names import reported_metrics
from distrec.tune.resume import check_resumable, restore_tuner
from distrec.tune.space import Param, check_searcher, parse_space, ray_space, validate_space
from distrec.tune.trainable import TrialSpec
from distrec.utils.progress import log

SWEEP_FILE = "sweep.json"
EXPERIMENT = "trials"
# Preparation and cache locations are shared by every trial; sweeping them would make
# trials race on (and disagree about) the prepared data.
UNSWEEPABLE = ("data.domains", "data.prepared_dir", "data.raw_dir", "cache_dir")
STAGE_EPOCHS = {
    "pretrain": "stages.pretrain.epochs",
    "adapt": "stages.adapt.epochs",
    "baseline_text_target_only": "stages.text_baseline_epochs",
    "baseline_id_target_only": "stages.id_baseline_epochs",
}


def load_sweep_tree(config: str, overrides: list[str]) -> tuple[dict, RunConfig]:
    """The run-config tree with `overrides` applied (what trials override further) and its
    validated RunConfig."""
    tree = read_yaml(config)
    for item in overrides:
        apply_override(tree, item)
    return tree, config_from_dict(tree, source=config)


def check_sweep(tree: dict, cfg: RunConfig) -> list[Param]:
    """Everything that can be wrong with a sweep, before Ray starts."""
    params = parse_space(cfg.tune.search_space)
    for p in params:
        if any(p.key == k or p.key.startswith(k + ".") for k in UNSWEEPABLE):
            raise ConfigError(
                f"tune.search_space.{p.key}: the data preparation and caches are shared by all "
                f"trials and cannot be swept; prepare each variant as its own domain instead"
            )
    validate_space(tree, params)
    check_searcher(params, cfg.tune.search_alg)
    check_stage(cfg)
    if cfg.tune.metric.removeprefix("valid.") not in reported_metrics(cfg.eval.ks):
        raise ConfigError(
            f"tune.metric={cfg.tune.metric!r}: validation reports recall/ndcg@K for K in "
            f"eval.ks={cfg.eval.ks} and mrr@10; pick one of those"
        )
    if cfg.tune.search_alg == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError(
                "tune.search_alg=optuna needs Optuna, an optional dependency: "
                "pip install 'distrec[optuna]' (or use tune.search_alg=random)"
            ) from None
    return params


def check_stage(cfg: RunConfig) -> None:
    """tune.stage must be a stage the run config runs (its validation metric is reported)."""
    st, stage = cfg.stages, cfg.tune.stage
    enabled = {
        "pretrain": st.pretrain.enabled,
        "adapt": st.adapt.enabled and st.pretrain.enabled and cfg.data.target is not None,
        "baseline_text_target_only": "text_target_only" in st.baselines,
        "baseline_id_target_only": "id_target_only" in st.baselines,
    }[stage]
    if not enabled:
        raise ConfigError(
            f"tune.stage={stage!r} reports that stage's validation metric, but the run config "
            f"does not run it; enable it under stages or pick another tune.stage"
        )


def max_epochs(tree: dict, cfg: RunConfig, params: list[Param]) -> int:
    """ASHA's max_t: the swept stage's epoch budget (the largest one, if it is swept)."""
    key = STAGE_EPOCHS[cfg.tune.stage]
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    swept = [p for p in params if p.key == key]
    return max([int(node), *(int(v) for p in swept for v in p.candidates())])


def absolute_paths(tree: dict, cfg: RunConfig, base: Path) -> dict:
    """Trials run in their own folders: every path in the tree is made absolute."""
    import copy

    out = copy.deepcopy(tree)

    def fix(value: str) -> str:
        return value if "://" in value else str((base / value).resolve())

    out["cache_dir"] = fix(cfg.cache_dir)
    data = out.setdefault("data", {})
    data["prepared_dir"] = fix(cfg.data.prepared_dir)
    data["raw_dir"] = fix(cfg.data.raw_dir)
    for d_tree, d in zip(data.get("domains", []), cfg.data.domains, strict=True):
        for field in ("interactions", "items"):
            if getattr(d, field):
                d_tree[field] = fix(getattr(d, field))
    if cfg.distributed.launcher:
        out.setdefault("distributed", {})["launcher"] = fix(cfg.distributed.launcher)
    enc = cfg.model.item_encoder
    if not enc.startswith("embedded:") and (base / enc).exists():
        out.setdefault("model", {})["item_encoder"] = fix(enc)
    return out


def warm_caches(cfg: RunConfig) -> None:
    """Prepare the data and compute the LM item features (or token tables) once, here, so
    concurrent trials read them instead of racing to write them."""
    from distrec.data.prepare import prepare_domains
    from distrec.distributed.accelerator import build_accelerator
    from distrec.train.workspace import Workspace

    prepare_domains(cfg)
    accelerator, precision = build_accelerator(cfg)
    Workspace.open(cfg, accelerator, precision)


def check_out_dir(out: Path) -> None:
    """A new sweep needs a new or empty --out: never an old sweep, never other files."""
    if (out / SWEEP_FILE).exists():
        raise ConfigError(
            f"--out {out}: already holds a sweep; continue it with `distrec tune --resume {out}` "
            f"or choose another --out"
        )
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"--out {out}: exists and is not a sweep folder (no {SWEEP_FILE}); nothing there is "
            f"overwritten: choose an empty or new folder"
        )


def storage_of(cfg: RunConfig, out: Path) -> str:
    """Where Ray keeps trials and checkpoints: tune.storage (any URI Ray reads) or --out."""
    if cfg.tune.storage is None:
        return str(out.resolve())
    s = cfg.tune.storage
    return s if "://" in s else str(Path(s).resolve())


def start_sweep(config: str, overrides: list[str], out: str | None, verbose: bool = False) -> int:
    """`distrec tune`: check the sweep, warm the caches, write sweep.json to `out` (default
    runs/tune-<config stem>) and run it; returns the exit code (130 if interrupted)."""
    from distrec.train.preflight import preflight
    from distrec.utils.plugins import absolute_plugins

    tree, cfg = load_sweep_tree(config, overrides)
    params = check_sweep(tree, cfg)
    preflight(cfg)
    absolute_plugins()  # trials run in their own folders: relative plugin paths would break
    out_dir = Path(out or f"runs/tune-{Path(config).stem}")
    check_out_dir(out_dir)
    trial_tree = absolute_paths(tree, cfg, Path.cwd())
    log(f"sweep {out_dir}: {len(params)} swept keys, checked against {config}")
    warm_caches(config_from_dict(trial_tree, source=config))
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "config": str(config),
        "overrides": overrides,
        "cwd": str(Path.cwd()),
        "tree": tree,
        "trial_tree": trial_tree,
        "storage": storage_of(cfg, out_dir),
        "experiment": EXPERIMENT if cfg.tune.storage is None else out_dir.resolve().name,
        "threads": trial_threads(cfg),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / SWEEP_FILE).write_text(json.dumps(state, indent=2))
    return _run(out_dir, state, params, cfg, restore=False, verbose=verbose)


def resume_sweep(out: str, verbose: bool = False) -> int:
    """`distrec tune --resume`: continue the sweep in `out` from its sweep.json and Ray's
    saved experiment; returns the exit code."""
    out_dir = Path(out)
    if not (out_dir / SWEEP_FILE).exists():
        raise ConfigError(
            f"--resume {out}: no {SWEEP_FILE} there, so it is not a sweep started by distrec tune"
        )
    state = json.loads((out_dir / SWEEP_FILE).read_text())
    check_resumable(out_dir, state)
    cfg = config_from_dict(state["tree"], source=str(out_dir / SWEEP_FILE))
    params = parse_space(cfg.tune.search_space)
    return _run(out_dir, state, params, cfg, restore=True, verbose=verbose)


def trial_threads(cfg: RunConfig) -> int:
    """Torch threads per trial: train.threads if the config pins it, else the trial's CPU
    share (at least one). Written into every trial's config and into best.yaml."""
    return cfg.train.threads or max(1, int(cfg.tune.cpus_per_trial))


def _run(
    out_dir: Path, state: dict, params: list[Param], cfg: RunConfig, restore: bool, verbose: bool
) -> int:
    from distrec.tune.progress import SweepProgress
    from distrec.tune.results import SweepFacts, records_from_grid, write_results

    t = cfg.tune
    spec = trial_spec(state, cfg)
    start_ray(state, verbose)
    trainable = build_trainable(spec, cfg)
    start = time.perf_counter()
    if restore:
        tuner = restore_tuner(trainable, out_dir, state)
    else:
        progress = SweepProgress(t.num_samples * grid_size(params), t.metric, t.mode)
        tuner = build_tuner(trainable, cfg, params, state, progress)
    grid = tuner.fit()
    progress = SweepProgress.active
    expected = t.num_samples * grid_size(params)
    unfinished = (progress.unfinished() if progress else 0) + max(0, expected - len(grid))
    if unfinished:
        # Ctrl-C / SIGUSR1: Ray saved the experiment and returned early. Results now would
        # call running trials finished, so there are none until the sweep ends.
        log(
            f"sweep interrupted with {unfinished} trial(s) unfinished; continue with "
            f"`distrec tune --resume {out_dir}`"
        )
        return 130
    records = records_from_grid(grid, t.metric)
    sweep = SweepFacts(out_dir, state["tree"], params, cfg, state["threads"])
    summary = write_results(records, sweep, time.perf_counter() - start)
    print(summary, end="")
    return 0


def trial_spec(state: dict, cfg: RunConfig) -> TrialSpec:
    """What every trial of the sweep shares, from sweep.json's `state` and tune.*."""
    t = cfg.tune
    return TrialSpec(
        state["trial_tree"],
        t.stage,
        state["threads"],
        t.workers_per_trial,
        t.cpus_per_trial,
        t.gpus_per_trial,
        t.max_failures,
        f"{state['storage'].rstrip('/')}/train",
    )


def start_ray(state: dict, verbose: bool) -> None:
    """Ray, quiet about the per-epoch checkpoints; an existing cluster when RAY_ADDRESS."""
    import ray

    # Per-epoch checkpoints of short trials trip Ray's "snapshotting too often" warning
    # every few seconds; the snapshots are what --resume needs, so the warning is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if "://" not in state["storage"]:
        # See build_tuner: the experiment state must never name a deleted checkpoint.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    if not ray.is_initialized():
        # RAY_ADDRESS (a cluster) is honoured by ray.init; locally it starts one.
        ray.init(include_dashboard=False, log_to_driver=verbose, configure_logging=verbose)


def build_trainable(spec: TrialSpec, cfg: RunConfig):
    """The trial function bound to `spec`, with the resources each trial asks Ray for."""
    from ray import tune

    from distrec.tune.trainable import run_trial, run_trial_workers

    t = cfg.tune
    fn = run_trial if t.workers_per_trial == 1 else run_trial_workers
    # With Ray Train workers the trial itself only drives them and the workers ask for the
    # CPUs/GPUs. Ray refuses an all-zero request, and any CPU share for the driver would
    # leave the last worker unschedulable on a full node: one byte of memory it is.
    resources = (
        {"cpu": t.cpus_per_trial, "gpu": t.gpus_per_trial}
        if t.workers_per_trial == 1
        else {"cpu": 0, "memory": 1}
    )
    return tune.with_resources(tune.with_parameters(fn, spec=spec), resources)


def grid_size(params: list[Param]) -> int:
    """Combinations of the `grid` specs (1 without any): trials per tune.num_samples."""
    n = 1
    for p in params:
        if p.kind == "grid":
            n *= len(p.values)
    return n


def build_tuner(trainable, cfg: RunConfig, params: list[Param], state: dict, progress):
    """A new Tuner: ASHA on `epoch` (or FIFO), seeded random or Optuna search, the sweep's
    storage, retries and checkpoints kept; `progress` is its callback."""
    from ray import tune

    from distrec.tune.snapshot import StateSnapshot

    t = cfg.tune
    local = "://" not in state["storage"]
    scheduler = trial_scheduler(cfg, max_epochs(state["tree"], cfg, params))
    search = search_algorithm(cfg)
    return tune.Tuner(
        trainable,
        param_space=ray_space(params),
        tune_config=tune.TuneConfig(
            metric=t.metric,
            mode=t.mode,
            scheduler=scheduler,
            search_alg=search,
            num_samples=t.num_samples,
            # Concurrency is the search algorithm's job (BasicVariantGenerator's
            # max_concurrent, ConcurrencyLimiter); Ray ignores max_concurrent_trials then.
            # A fresh process per trial: Accelerate's state is a per-process singleton.
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=state["experiment"],
            storage_path=state["storage"],
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            # Ray deletes a trial's old checkpoint when it registers a new one, and
            # writes the experiment state (what --resume restores from) only afterwards:
            # with num_to_keep=1 a driver killed in between leaves a state naming a
            # deleted checkpoint, and that trial fails to restore (seen here). Keeping two,
            # and saving the state on every driver step (local storage: cheap), means the
            # state always names the newest or the one before, both on disk.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            sync_config=tune.SyncConfig(sync_period=0 if local else 300),
            # Local storage: a consistent copy of the state after every step (snapshot.py).
            callbacks=[progress, StateSnapshot()] if local else [progress],
            verbose=0,
        ),
    )


def trial_scheduler(cfg: RunConfig, max_t: int):
    """ASHA on the trials' `epoch` (tune.scheduler=asha), else FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    t = cfg.tune
    if t.scheduler != "asha":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        # +1: ASHA stops a trial that reaches max_t at once, before the run writes its
        # metrics.json and report; one epoch further is never reached, and adds no rung
        # that could be (a rung at max_t + 1 is past the last epoch).
        max_t=max_t + 1,
        grace_period=min(t.grace_period, max_t),
        reduction_factor=t.reduction_factor,
    )


def search_algorithm(cfg: RunConfig):
    """Optuna (tune.search_alg=optuna) or seeded random search, at most max_concurrent trials."""
    t = cfg.tune
    if t.search_alg == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=cfg.seed), max_concurrent=t.max_concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Seeded: the same config samples the same trials.
    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=t.max_concurrent)
