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
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


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

import torch  # noqa: E402

# Run as a script in .venv-peers (no package context) or imported by the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from perf.peers.protocol import ModelInputs, score_batches, summary_metrics  # noqa: E402
from perf.peers.recbole_training import (  # noqa: E402
    EpochClock,
    Loaded,
    Training,
    load_best,
    protocol_trainer,
    train_or_recover,
)
from perf.peers.run_record import Evaluation, run_record, stage_name, write_ranks  # noqa: E402
from perf.peers.split_check import IdMaps, RecBoleSets, check_split, id_maps  # noqa: E402

SEQUENTIAL = {"GRU4Rec", "SASRec"}
MODELS = ("Pop", "BPR", "GRU4Rec", "SASRec")
DEFAULT_CAP_MIN = {"Pop": None, "BPR": None, "GRU4Rec": 70.0, "SASRec": 70.0}


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


if __name__ == "__main__":
    main()
