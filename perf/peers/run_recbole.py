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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

# Run as a script in .venv-peers (no package context) or imported by the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from perf.peers.protocol import ndcg_at, score_batches, summary_metrics  # noqa: E402
from perf.peers.split_check import check_split, id_maps  # noqa: E402

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


def main(argv: list[str] | None = None) -> None:
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
    args = ap.parse_args(argv)

    data_dir = Path(args.data).resolve()
    split = json.loads((data_dir / "split.json").read_text())
    if args.max_history is None:
        args.max_history = int(split["max_history"])
    cap_min = args.max_minutes if args.max_minutes is not None else DEFAULT_CAP_MIN[args.model]
    domain, num_items = split["domain"], int(split["num_items"])
    repo = Path(__file__).resolve().parents[2]
    out = Path(args.out) if args.out else repo / "perf" / "results" / "peers" / domain / args.model
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix=f"recbole-{args.model}-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # RecBole writes log/, log_tensorboard/ and saved/ under the cwd

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(args.threads)
    seq = args.model in SEQUENTIAL
    cfg_dict = recbole_config(args, data_dir, split["dataset"], work)
    config = Config(model=args.model, dataset=split["dataset"], config_dict=cfg_dict)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    cat, users, rid_of_user = id_maps(dataset, num_items)
    rid_of_cat = np.zeros(num_items + 1, dtype=np.int64)
    rid_of_cat[cat[cat >= 0]] = np.nonzero(cat >= 0)[0]
    cases = check_split(
        train_data.dataset,
        valid_data.dataset,
        test_data.dataset,
        split,
        cat,
        users,
        seq,
        args.max_history,
    )
    print(
        f"[peers] {args.model}: split checked for {len(cases['valid'])} users "
        f"(valid and test targets and histories equal distrec's)",
        flush=True,
    )

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer_cls = get_trainer(config["MODEL_TYPE"], config["model"])

    def rank(split_name: str) -> torch.Tensor:
        return score_batches(
            model, cases[split_name], rid_of_user, rid_of_cat, cat, seq, args.max_history, dataset
        )

    curve: list[dict] = []
    state = {"t0": None, "epoch": -1, "epoch_t0": None, "durations": []}
    cap_s = cap_min * 60.0 if cap_min else None

    class ProtocolTrainer(trainer_cls):
        """RecBole's trainer, with validation under distrec's protocol and a wall cap."""

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            now = time.perf_counter()
            if state["t0"] is None:
                state["t0"] = now
            elapsed = now - state["t0"]
            # the next epoch is predicted to take as long as the slowest of the last three
            next_s = max(state["durations"][-3:], default=0.0)
            if cap_s is not None and curve and elapsed + next_s > cap_s:
                raise WallCap(f"epoch {epoch_idx} would end past the {cap_min} min cap")
            state["epoch"], state["epoch_t0"] = epoch_idx, now
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)

        def _valid_epoch(self, valid_data, show_progress=False):
            t = time.perf_counter()
            ranks = rank("valid")
            ndcg = ndcg_at(ranks, 10)
            done = time.perf_counter()
            epoch = state["epoch"]
            loss = self.train_loss_dict.get(epoch)
            curve.append(
                {
                    "epoch": epoch,
                    "elapsed_s": round(done - state["t0"], 3),
                    "train_s": round(t - state["epoch_t0"], 3),
                    "valid_s": round(done - t, 3),
                    "train_loss": None if loss is None else float(loss),
                    "valid_ndcg@10": ndcg,
                }
            )
            state["durations"].append(done - state["epoch_t0"])
            print(
                f"[peers] {args.model} epoch {epoch}: loss {loss:.4f} valid ndcg@10 {ndcg:.5f} "
                f"({done - state['epoch_t0']:.1f}s, {done - state['t0']:.0f}s total)",
                flush=True,
            )
            return ndcg, {"ndcg@10": ndcg}

    trainer = ProtocolTrainer(config, model)
    reason = "early_stopping"
    t_start = time.perf_counter()
    if args.recover:
        ckpt_file = Path(args.recover[0]).resolve()
        curve.extend(curve_from_log(Path(args.recover[1]), args.model))
        reason = "capped"
        train_wall = curve[-1]["elapsed_s"] if curve else float("nan")
    else:
        try:
            trainer.fit(train_data, valid_data, verbose=False, saved=True, show_progress=False)
            if curve and len(curve) >= args.epochs:
                reason = "max_epochs"
        except WallCap as stop:
            reason = "capped"
            print(f"[peers] {args.model}: {stop}", flush=True)
        train_wall = time.perf_counter() - t_start
        ckpt_file = Path(trainer.saved_model_file)
    if args.model == "Pop":
        reason = "single_pass"  # RecBole's TraditionalTrainer: one counting epoch

    # Best checkpoint (RecBole's own file, written moments ago by this process or, with
    # --recover, by the killed run of this same driver: it pickles the Config, so
    # torch >= 2.6's weights_only default cannot read it).
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        ckpt = torch.load(ckpt_file, map_location="cpu")
    finally:
        del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    model.load_state_dict(ckpt["state_dict"])
    model.load_other_parameter(ckpt.get("other_parameter"))
    best_epoch = int(ckpt["epoch"])

    ranks = {s: rank(s) for s in ("valid", "test")}
    ours = {s: summary_metrics(r) for s, r in ranks.items()}
    recbole_own = {
        s: {k: float(v) for k, v in trainer.evaluate(d, load_best_model=False).items()}
        for s, d in (("valid", valid_data), ("test", test_data))
    }
    if not args.recover:
        ckpt_file.unlink(missing_ok=True)
    os.chdir(repo)
    if args.work is None:  # our own scratch folder: RecBole's logs and tensorboard files
        shutil.rmtree(work, ignore_errors=True)

    stage = f"recbole_{args.model.lower()}"
    rows = [
        pd.DataFrame(
            {
                "stage": stage,
                "split": s,
                "domain": domain,  # the same columns as distrec's own ranks.parquet
                "user": np.array([u for u, _ in cases[s]], dtype=np.int64),
                "rank": r.numpy().astype(np.float64),
            }
        )
        for s, r in ranks.items()
    ]
    pd.concat(rows, ignore_index=True).to_parquet(out / "ranks.parquet", index=False)

    best_ndcg = max((c["valid_ndcg@10"] for c in curve), default=float("nan"))
    first_best = next((c for c in curve if c["valid_ndcg@10"] == best_ndcg), None)
    hparams = {
        k: config[k]
        for k in (
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
        if config[k] is not None or k in config.final_config_dict
    }
    run = {
        "model": args.model,
        "stage": stage,
        "domain": domain,
        "recbole_version": recbole.__version__,
        "torch_version": torch.__version__,
        "dataset": split["dataset"],
        "fingerprint": split.get("fingerprint"),
        "hyper_parameters": _jsonable(hparams),
        "seed": args.seed,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "max_minutes": cap_min,
        "epochs_run": len(curve),
        "best_epoch": best_epoch,
        "stopping_reason": reason,
        "capped": reason == "capped",
        "wall_s": round(train_wall, 3),
        "best_valid_ndcg@10": best_ndcg,
        "first_best_elapsed_s": first_best["elapsed_s"] if first_best else None,
        "protocol_metrics": ours,
        "recbole_metrics": recbole_own,
        "recbole_metrics_note": (
            "RecBole's own evaluator, reference only: it does not mask history for "
            "sequential models and counts ties differently"
        ),
        "curve": curve,
        "split_check": "passed",
        "recovered": None
        if not args.recover
        else {
            "checkpoint": str(ckpt_file),
            "log": args.recover[1],
            "why": args.recover_note or "stopped from outside at a deadline",
            "note": "best checkpoint of the stopped run, tested here; curve parsed from its "
            "log (elapsed rounded to seconds, valid NDCG@10 to 5 decimals)",
        },
        "protocol": "full catalog, history masked, target rankable, 0-based fractional ranks",
    }
    (out / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    print(
        f"[peers] {args.model}: {reason}, {len(curve)} epochs, best epoch {best_epoch}, "
        f"test ndcg@10 {ours['test']['ndcg@10']:.5f} (valid {ours['valid']['ndcg@10']:.5f}), "
        f"wall {train_wall:.0f}s -> {out}",
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
