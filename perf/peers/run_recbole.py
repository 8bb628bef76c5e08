"""Train one RecBole model on distrec's exported split and rank under distrec's protocol.

Runs in .venv-peers (`make peers`); distrec is not installed there and is never imported.
Input: the folder written by export.py (RecBole benchmark files + split.json).

Protocol (identical to distrec.eval): full ranking over the whole catalog 1..N, every item
of the user's history masked, the target itself always rankable (even if in the history),
padding item 0 never ranked, rank = #(items scoring strictly higher) + 0.5 * #(other items
scoring equal), 0-based. RecBole's own full-sort evaluation of sequential models does not
mask the history, so validation (which drives RecBole's early stopping) and test are
computed here; RecBole's own metrics are recorded for reference only.

    .venv-peers/bin/python perf/peers/run_recbole.py --data data/peers/ml-100k --model SASRec
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _threads_from_argv(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


if __name__ == "__main__":
    # Before torch is imported: OpenMP/MKL pools as small as torch's intra-op pool.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = _threads_from_argv(sys.argv)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

# Run as a script in .venv-peers (no package context) or imported by the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from perf.peers.protocol import ModelInputs, ndcg_at, score_batches, summary_metrics  # noqa: E402
from perf.peers.split_check import IdMaps, RecBoleSets, check_split, id_maps  # noqa: E402

SEQUENTIAL = {"GRU4Rec", "SASRec"}
MODELS = ("Pop", "BPR", "GRU4Rec", "SASRec")
DEFAULT_CAP_MIN = {"Pop": None, "BPR": None, "GRU4Rec": 70.0, "SASRec": 70.0}


class WallCap(Exception):
    """Raised before an epoch that would end past the wall-time cap."""


def recbole_config(args, data_dir: Path, dataset: str, work: Path) -> dict:
    """RecBole's defaults for the model, except what the protocol fixes."""
    seq = args.model in SEQUENTIAL
    load_inter = ["user_id", "item_id", "timestamp"] + (["item_id_list"] if seq else [])
    cfg = {
        "data_path": str(data_dir / ("sequential" if seq else "general")),
        "dataset": dataset,
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": load_inter, "item": ["item_id"]},
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "rm_dup_inter": None,
        "MAX_ITEM_LIST_LENGTH": args.max_history,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "eval_step": 1,
        "eval_args": {"order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["NDCG", "Recall", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "worker": 0,
        "show_progress": False,
        "checkpoint_dir": str(work / "saved"),
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
    }
    if seq:
        cfg["alias_of_item_id"] = ["item_id_list"]
        # RecBole's sequential defaults use loss_type CE, which needs negative sampling off.
        cfg["train_neg_sample_args"] = None
    return cfg


HYPER_PARAMETERS = (
    "learning_rate",
    "train_batch_size",
    "eval_batch_size",
    "learner",
    "weight_decay",
    "embedding_size",
    "hidden_size",
    "inner_size",
    "n_layers",
    "n_heads",
    "num_layers",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "dropout_prob",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
    "loss_type",
    "train_neg_sample_args",
    "MAX_ITEM_LIST_LENGTH",
    "epochs",
    "stopping_step",
    "eval_step",
    "valid_metric",
    "clip_grad_norm",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The driver's command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data", required=True, help="export.py's output folder")
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--out", default=None, help="default perf/results/peers/<domain>/<model>")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--stopping-step", type=int, default=10)
    ap.add_argument("--max-history", type=int, default=None, help="default: split.json's")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time cap on training (default 70 for SASRec/GRU4Rec, none otherwise)",
    )
    ap.add_argument("--work", default=None, help="scratch folder for RecBole's checkpoints")
    ap.add_argument(
        "--recover",
        nargs=2,
        metavar=("CHECKPOINT", "LOG"),
        default=None,
        help="no training: test RecBole's best checkpoint of a run that was stopped from "
        "outside (killed at a deadline), with its per-epoch curve read from that run's log; "
        "recorded as capped",
    )
    ap.add_argument("--recover-note", default="", help="why the recovered run stopped")
    return ap.parse_args(argv)


@dataclass(frozen=True)
class RunPaths:
    """Where one run reads (export folder) and writes (results, RecBole's scratch)."""

    data_dir: Path
    out: Path
    work: Path
    repo: Path


def run_paths(args: argparse.Namespace, domain: str) -> RunPaths:
    """Resolve and create the results and scratch folders."""
    repo = Path(__file__).resolve().parents[2]
    out = Path(args.out) if args.out else repo / "perf" / "results" / "peers" / domain / args.model
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix=f"recbole-{args.model}-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return RunPaths(Path(args.data).resolve(), out, work, repo)


@dataclass(frozen=True)
class Loaded:
    """RecBole's config, dataset and train/valid/test loaders for this run."""

    config: Any
    dataset: Any
    train: Any
    valid: Any
    test: Any


def load_recbole(args: argparse.Namespace, split: dict, data_dir: Path, work: Path) -> Loaded:
    """RecBole's Config and data for the exported split (run with cwd = the scratch folder)."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    cfg_dict = recbole_config(args, data_dir, split["dataset"], work)
    config = Config(model=args.model, dataset=split["dataset"], config_dict=cfg_dict)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return Loaded(config, dataset, train_data, valid_data, test_data)


def checked_cases(args: argparse.Namespace, split: dict, loaded: Loaded) -> tuple[IdMaps, dict]:
    """Id maps and eval cases, once RecBole's loaded split is checked to be distrec's."""
    ids = id_maps(loaded.dataset, int(split["num_items"]))
    sets = RecBoleSets(loaded.train.dataset, loaded.valid.dataset, loaded.test.dataset)
    cases = check_split(sets, split, ids, seq=args.model in SEQUENTIAL, max_hist=args.max_history)
    print(
        f"[peers] {args.model}: split checked for {len(cases['valid'])} users "
        f"(valid and test targets and histories equal distrec's)",
        flush=True,
    )
    return ids, cases


def new_model(loaded: Loaded):
    """The configured RecBole model (seeded as RecBole's own run_recbole does)."""
    from recbole.utils import get_model, init_seed

    config = loaded.config
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    return get_model(config["model"])(config, loaded.train._dataset).to(config["device"])


@dataclass
class EpochClock:
    """Timing, the protocol's validation curve and the wall-time cap of one training run."""

    model: str
    cap_min: float | None
    curve: list[dict] = field(default_factory=list)
    t0: float | None = None
    epoch: int = -1
    epoch_t0: float | None = None
    durations: list[float] = field(default_factory=list)

    def start_epoch(self, epoch_idx: int) -> None:
        """Raise WallCap if this epoch is predicted to end past the cap."""
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        elapsed = now - self.t0
        cap_s = self.cap_min * 60.0 if self.cap_min else None
        # the next epoch is predicted to take as long as the slowest of the last three
        next_s = max(self.durations[-3:], default=0.0)
        if cap_s is not None and self.curve and elapsed + next_s > cap_s:
            raise WallCap(f"epoch {epoch_idx} would end past the {self.cap_min} min cap")
        self.epoch, self.epoch_t0 = epoch_idx, now

    def record_validation(self, *, valid_t0: float, ndcg: float, loss) -> None:
        """Append the epoch's point to the curve and print its `[peers]` log line."""
        done = time.perf_counter()
        self.curve.append(
            {
                "epoch": self.epoch,
                "elapsed_s": round(done - self.t0, 3),
                "train_s": round(valid_t0 - self.epoch_t0, 3),
                "valid_s": round(done - valid_t0, 3),
                "train_loss": None if loss is None else float(loss),
                "valid_ndcg@10": ndcg,
            }
        )
        self.durations.append(done - self.epoch_t0)
        print(
            f"[peers] {self.model} epoch {self.epoch}: loss {loss:.4f} valid ndcg@10 {ndcg:.5f} "
            f"({done - self.epoch_t0:.1f}s, {done - self.t0:.0f}s total)",
            flush=True,
        )


def protocol_trainer(config, model, *, clock: EpochClock, rank: Callable[[str], torch.Tensor]):
    """RecBole's trainer for the model, validating under distrec's protocol with a wall cap."""
    from recbole.utils import get_trainer

    trainer_cls = get_trainer(config["MODEL_TYPE"], config["model"])

    class ProtocolTrainer(trainer_cls):
        """RecBole's trainer, with validation under distrec's protocol and a wall cap."""

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            clock.start_epoch(epoch_idx)
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)

        def _valid_epoch(self, valid_data, show_progress=False):
            t = time.perf_counter()
            ndcg = ndcg_at(rank("valid"), 10)
            loss = self.train_loss_dict.get(clock.epoch)
            clock.record_validation(valid_t0=t, ndcg=ndcg, loss=loss)
            return ndcg, {"ndcg@10": ndcg}

    return ProtocolTrainer(config, model)


@dataclass(frozen=True)
class Training:
    """How training ended, its wall time and RecBole's best checkpoint."""

    reason: str
    wall_s: float
    checkpoint: Path


def train_or_recover(args: argparse.Namespace, trainer, loaded: Loaded, clock: EpochClock):
    """Fit (until early stopping, max epochs or the cap) or, with --recover, read the log."""
    if args.recover:
        clock.curve.extend(curve_from_log(Path(args.recover[1]), args.model))
        wall = clock.curve[-1]["elapsed_s"] if clock.curve else float("nan")
        training = Training("capped", wall, Path(args.recover[0]).resolve())
    else:
        training = fit(args, trainer, loaded, clock)
    if args.model == "Pop":  # RecBole's TraditionalTrainer: one counting epoch
        training = Training("single_pass", training.wall_s, training.checkpoint)
    return training


def fit(args: argparse.Namespace, trainer, loaded: Loaded, clock: EpochClock) -> Training:
    """RecBole's fit, saving its best checkpoint; a WallCap ends it as capped."""
    reason = "early_stopping"
    t_start = time.perf_counter()
    try:
        trainer.fit(loaded.train, loaded.valid, verbose=False, saved=True, show_progress=False)
        if clock.curve and len(clock.curve) >= args.epochs:
            reason = "max_epochs"
    except WallCap as stop:
        reason = "capped"
        print(f"[peers] {args.model}: {stop}", flush=True)
    return Training(reason, time.perf_counter() - t_start, Path(trainer.saved_model_file))


def load_best(model, checkpoint: Path) -> int:
    """Load RecBole's best checkpoint into `model`; returns its epoch."""
    # RecBole's own file, written moments ago by this process or, with --recover, by the
    # killed run of this same driver: it pickles the Config, so torch >= 2.6's weights_only
    # default cannot read it.
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        ckpt = torch.load(checkpoint, map_location="cpu")
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    model.load_state_dict(ckpt["state_dict"])
    model.load_other_parameter(ckpt.get("other_parameter"))
    return int(ckpt["epoch"])


@dataclass(frozen=True)
class Evaluation:
    """The best checkpoint's ranks and metrics: ours (the protocol) and RecBole's own."""

    best_epoch: int
    ranks: dict[str, torch.Tensor]
    protocol: dict[str, dict]
    recbole: dict[str, dict]


def evaluate_best(model, trainer, loaded: Loaded, training: Training, rank) -> Evaluation:
    """Test the best checkpoint under the protocol, and with RecBole's evaluator for reference."""
    best_epoch = load_best(model, training.checkpoint)
    ranks = {s: rank(s) for s in ("valid", "test")}
    ours = {s: summary_metrics(r) for s, r in ranks.items()}
    recbole_own = {
        s: {k: float(v) for k, v in trainer.evaluate(d, load_best_model=False).items()}
        for s, d in (("valid", loaded.valid), ("test", loaded.test))
    }
    return Evaluation(best_epoch, ranks, ours, recbole_own)


def clean_up(args: argparse.Namespace, paths: RunPaths, training: Training) -> None:
    """Remove our checkpoint and scratch folder; back to the repository."""
    if not args.recover:
        training.checkpoint.unlink(missing_ok=True)
    os.chdir(paths.repo)
    if args.work is None:  # our own scratch folder: RecBole's logs and tensorboard files
        shutil.rmtree(paths.work, ignore_errors=True)


def stage_name(model: str) -> str:
    """The stage column of ranks.parquet and peers tables, e.g. recbole_sasrec."""
    return f"recbole_{model.lower()}"


def write_ranks(path: Path, stage: str, domain: str, cases: dict, ranks: dict) -> None:
    """ranks.parquet with the same columns as distrec's own."""
    rows = [
        pd.DataFrame(
            {
                "stage": stage,
                "split": s,
                "domain": domain,
                "user": np.array([u for u, _ in cases[s]], dtype=np.int64),
                "rank": r.numpy().astype(np.float64),
            }
        )
        for s, r in ranks.items()
    ]
    pd.concat(rows, ignore_index=True).to_parquet(path, index=False)


def hyper_parameters(config) -> dict:
    """The model's and trainer's settings RecBole resolved (its defaults, our overrides)."""
    return {
        k: config[k]
        for k in HYPER_PARAMETERS
        if config[k] is not None or k in config.final_config_dict
    }


def recovered_note(args: argparse.Namespace, training: Training) -> dict | None:
    """run.json's `recovered` entry: None unless --recover."""
    if not args.recover:
        return None
    return {
        "checkpoint": str(training.checkpoint),
        "log": args.recover[1],
        "why": args.recover_note or "stopped from outside at a deadline",
        "note": "best checkpoint of the stopped run, tested here; curve parsed from its "
        "log (elapsed rounded to seconds, valid NDCG@10 to 5 decimals)",
    }


def run_record(
    args: argparse.Namespace,
    split: dict,
    *,
    config,
    clock: EpochClock,
    training: Training,
    evaluation: Evaluation,
) -> dict:
    """run.json's content."""
    import recbole

    curve = clock.curve
    best_ndcg = max((c["valid_ndcg@10"] for c in curve), default=float("nan"))
    first_best = next((c for c in curve if c["valid_ndcg@10"] == best_ndcg), None)
    return {
        "model": args.model,
        "stage": stage_name(args.model),
        "domain": split["domain"],
        "recbole_version": recbole.__version__,
        "torch_version": torch.__version__,
        "dataset": split["dataset"],
        "fingerprint": split.get("fingerprint"),
        "hyper_parameters": _jsonable(hyper_parameters(config)),
        "seed": args.seed,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "max_minutes": clock.cap_min,
        "epochs_run": len(curve),
        "best_epoch": evaluation.best_epoch,
        "stopping_reason": training.reason,
        "capped": training.reason == "capped",
        "wall_s": round(training.wall_s, 3),
        "best_valid_ndcg@10": best_ndcg,
        "first_best_elapsed_s": first_best["elapsed_s"] if first_best else None,
        "protocol_metrics": evaluation.protocol,
        "recbole_metrics": evaluation.recbole,
        "recbole_metrics_note": (
            "RecBole's own evaluator, reference only: it does not mask history for "
            "sequential models and counts ties differently"
        ),
        "curve": curve,
        "split_check": "passed",
        "recovered": recovered_note(args, training),
        "protocol": "full catalog, history masked, target rankable, 0-based fractional ranks",
    }


def main(argv: list[str] | None = None) -> None:
    """Train (or recover) one RecBole model; write ranks.parquet and run.json."""
    args = parse_args(argv)
    split = json.loads((Path(args.data).resolve() / "split.json").read_text())
    if args.max_history is None:
        args.max_history = int(split["max_history"])
    cap_min = args.max_minutes if args.max_minutes is not None else DEFAULT_CAP_MIN[args.model]
    paths = run_paths(args, split["domain"])
    os.chdir(paths.work)  # RecBole writes log/, log_tensorboard/ and saved/ under the cwd

    loaded = load_recbole(args, split, paths.data_dir, paths.work)
    ids, cases = checked_cases(args, split, loaded)
    model = new_model(loaded)
    inputs = ModelInputs(loaded.dataset, ids, args.model in SEQUENTIAL, args.max_history)

    def rank(split_name: str) -> torch.Tensor:
        return score_batches(model, cases[split_name], inputs)

    clock = EpochClock(args.model, cap_min)
    trainer = protocol_trainer(loaded.config, model, clock=clock, rank=rank)
    training = train_or_recover(args, trainer, loaded, clock)
    evaluation = evaluate_best(model, trainer, loaded, training, rank)
    clean_up(args, paths, training)

    stage = stage_name(args.model)
    write_ranks(paths.out / "ranks.parquet", stage, split["domain"], cases, evaluation.ranks)
    run = run_record(
        args, split, config=loaded.config, clock=clock, training=training, evaluation=evaluation
    )
    (paths.out / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    ours = evaluation.protocol
    print(
        f"[peers] {args.model}: {training.reason}, {len(clock.curve)} epochs, best epoch "
        f"{evaluation.best_epoch}, test ndcg@10 {ours['test']['ndcg@10']:.5f} "
        f"(valid {ours['valid']['ndcg@10']:.5f}), wall {training.wall_s:.0f}s -> {paths.out}",
        flush=True,
    )


def curve_from_log(log: Path, model: str) -> list[dict]:
    """Per-epoch curve from this driver's own `[peers] <model> epoch N: ...` log lines."""
    pat = re.compile(
        rf"^\[peers\] {re.escape(model)} epoch (\d+): loss (\S+) valid ndcg@10 (\S+) "
        r"\((\S+)s, (\S+)s total\)"
    )
    curve = []
    for line in log.read_text().splitlines():
        m = pat.match(line)
        if m:
            curve.append(
                {
                    "epoch": int(m[1]),
                    "elapsed_s": float(m[5]),
                    "epoch_s": float(m[4]),
                    "train_loss": float(m[2]),
                    "valid_ndcg@10": float(m[3]),
                }
            )
    return curve


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = str(v)
        if isinstance(v, float) and math.isnan(v):
            out[k] = None
    return out


if __name__ == "__main__":
    main()
