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

SEQUENTIAL = {"GRU4Rec", "SASRec"}
MODELS = ("Pop", "BPR", "GRU4Rec", "SASRec")
DEFAULT_CAP_MIN = {"Pop": None, "BPR": None, "GRU4Rec": 70.0, "SASRec": 70.0}
KS = (10,)


class SplitMismatch(RuntimeError):
    """RecBole's loaded split differs from distrec's: the comparison would be unfair."""


class WallCap(Exception):
    """Raised before an epoch that would end past the wall-time cap."""


# ---------------------------------------------------------------- protocol (as distrec)
def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor
) -> torch.Tensor:
    """Same rule as distrec.eval.metrics.ranks_from_scores (copied: no distrec here)."""
    if not torch.isfinite(scores[:, 1:]).all():
        raise RuntimeError("non-finite scores; check the model")
    s = scores.float().masked_fill(exclude, float("-inf"))
    s[:, 0] = float("-inf")
    target = s.gather(1, targets[:, None])
    higher = (s > target).sum(1)
    ties = (s == target).sum(1) - 1
    return higher.double() + 0.5 * ties.double()


def ndcg_at(ranks: torch.Tensor, k: int = 10) -> float:
    r = ranks.double()
    if len(r) == 0:
        return float("nan")
    return torch.where(r < k, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r)).mean().item()


def summary_metrics(ranks: torch.Tensor) -> dict[str, float]:
    r = ranks.double()
    out = {"users": len(r)}
    for k in KS:
        hit = r < k
        out[f"recall@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = ndcg_at(r, k)
    out["mrr@10"] = torch.where(r < 10, 1.0 / (r + 1.0), torch.zeros_like(r)).mean().item()
    return out


# ---------------------------------------------------------------- RecBole set-up
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


def id_maps(dataset, num_items: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(catalog index of each RecBole item id, with -1 for [PAD]; distrec user index of each
    RecBole user id; distrec user -> RecBole user id)."""
    item_tokens = dataset.field2id_token[dataset.iid_field]
    cat = np.array([-1 if t == "[PAD]" else int(t) for t in item_tokens], dtype=np.int64)
    real = cat[cat >= 0]
    if sorted(real.tolist()) != list(range(1, num_items + 1)):
        raise SplitMismatch(
            f"RecBole's item vocabulary has {len(real)} items, distrec's catalog {num_items}"
        )
    user_tokens = dataset.field2id_token[dataset.uid_field]
    users = np.array([-1 if t == "[PAD]" else int(t) for t in user_tokens], dtype=np.int64)
    return cat, users, {int(u): i for i, u in enumerate(users) if u >= 0}


def expected_split(sequences: dict[str, list[int]], split: str) -> dict[int, tuple[list, int]]:
    """distrec's eval cases: user -> (full history, target), users with >= 3 items."""
    cut = 2 if split == "valid" else 1
    return {
        int(u): (items[:-cut], items[-cut]) for u, items in sequences.items() if len(items) >= 3
    }


def _rows(ds, cat: np.ndarray, users: np.ndarray, seq: bool):
    inter = ds.inter_feat
    uid = users[inter[ds.uid_field].numpy()]
    target = cat[inter[ds.iid_field].numpy()]
    ts = inter[ds.time_field].numpy()
    hist = None
    if seq:
        lists = cat[inter[ds.item_id_list_field].numpy()]
        lens = inter[ds.item_list_length_field].numpy()
        hist = [lists[r, : lens[r]].tolist() for r in range(len(uid))]
    return uid, target, ts, hist


def check_split(train_ds, valid_ds, test_ds, split: dict, cat, users, seq: bool, max_hist: int):
    """Fail loudly unless RecBole's train/valid/test rows are exactly distrec's split."""
    sequences = split["sequences"]
    problems: list[str] = []
    # train: general = the prefix items[:-2] (all items for < 3) in order; sequential =
    # one row per position >= 1 of that prefix, history = the prefix before it (last max_hist).
    uid, target, ts, hist = _rows(train_ds, cat, users, seq)
    order = np.lexsort((ts, uid))
    got: dict[int, list] = {}
    for r in order:
        got.setdefault(int(uid[r]), []).append(
            (int(target[r]), tuple(hist[r]) if seq else None, float(ts[r]))
        )
    for u, items in sequences.items():
        prefix = items[:-2] if len(items) >= 3 else items
        if seq:
            want = [
                (prefix[p], tuple(prefix[max(0, p - max_hist) : p]), float(p))
                for p in range(1, len(prefix))
            ]
        else:
            want = [(it, None, float(p)) for p, it in enumerate(prefix)]
        if got.get(int(u), []) != want:
            problems.append(f"train rows of user {u} differ")
    extra = set(got) - {int(u) for u in sequences}
    if extra:
        problems.append(f"train has unknown users {sorted(extra)[:5]}")
    cases = {}
    for name, ds in (("valid", valid_ds), ("test", test_ds)):
        want = expected_split(sequences, name)
        uid, target, _, hist = _rows(ds, cat, users, seq)
        seen = {}
        for r in range(len(uid)):
            u = int(uid[r])
            if u in seen:
                problems.append(f"{name}: user {u} has two rows")
            seen[u] = r
            if u not in want:
                problems.append(f"{name}: user {u} is not a distrec eval user")
                continue
            history, tgt = want[u]
            if int(target[r]) != tgt:
                problems.append(f"{name}: user {u} target {int(target[r])} != distrec's {tgt}")
            if seq and hist[r] != history[-max_hist:]:
                problems.append(f"{name}: user {u} history differs from distrec's")
        missing = set(want) - set(seen)
        if missing:
            problems.append(
                f"{name}: {len(missing)} distrec eval users missing, e.g. {sorted(missing)[:5]}"
            )
        if not seq:
            # general models score from the user embedding; RecBole's notion of the user's
            # history is what it trained on (train rows) plus, for test, the valid target.
            for u, (history, _) in want.items():
                known = [t for t, _, _ in got.get(u, [])]
                if name == "test":
                    known = [*known, sequences[str(u)][-2]]
                if known != history:
                    problems.append(f"{name}: user {u} train history differs from distrec's")
        cases[name] = sorted(want.items())
    if problems:
        head = "\n  ".join(problems[:20])
        raise SplitMismatch(f"{len(problems)} split mismatches:\n  {head}")
    return cases


def score_batches(model, cases, rid_of_user, rid_of_cat, cat, seq, max_hist, dataset, batch=256):
    """Fractional ranks for [(user, (history, target))] under the protocol."""
    from recbole.data.interaction import Interaction

    num_items = len(cat) - 1
    # catalog column of each RecBole item id column (PAD -> column 0, never ranked)
    col = torch.as_tensor(np.where(cat < 0, 0, cat))
    out = []
    model.eval()
    with torch.no_grad():
        for b in range(0, len(cases), batch):
            chunk = cases[b : b + batch]
            if seq:
                hl = [h[-max_hist:] for _, (h, _) in chunk]
                width = dataset.field2seqlen[dataset.item_id_list_field]
                mat = torch.zeros(len(chunk), width, dtype=torch.long)
                for r, h in enumerate(hl):
                    mat[r, : len(h)] = torch.as_tensor(rid_of_cat[h])
                inter = Interaction(
                    {
                        dataset.item_id_list_field: mat,
                        dataset.item_list_length_field: torch.tensor([len(h) for h in hl]),
                    }
                )
            else:
                inter = Interaction(
                    {dataset.uid_field: torch.tensor([rid_of_user[u] for u, _ in chunk])}
                )
            raw = model.full_sort_predict(inter).view(len(chunk), -1).double()
            scores = torch.zeros(len(chunk), num_items + 1, dtype=torch.float64)
            scores[:, col[1:]] = raw[:, 1:]
            exclude = torch.zeros(len(chunk), num_items + 1, dtype=torch.bool)
            for r, (_, (h, t)) in enumerate(chunk):
                exclude[r, h] = True
                exclude[r, t] = False
            targets = torch.tensor([t for _, (_, t) in chunk])
            out.append(ranks_from_scores(scores, targets, exclude))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


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
