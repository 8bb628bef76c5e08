"""Time to quality: how long distrec's ID model takes to reach the validation NDCG@10 that
RecBole's SASRec reached at its best, against how long RecBole took to reach it.

    python perf/time_to_quality.py --peer perf/results/peers/ml-100k/SASRec/run.json \
        --run perf/results/quality/id_ml100k --stage baseline_id_target_only --out perf/results/time_to_quality.json

Both curves are wall seconds since training start (RecBole: `curve[*].elapsed_s` written by
perf/peers/run_recbole.py; distrec: `history[*].elapsed_s` of the stage in metrics.json,
evaluation included) at the same torch thread count, which the JSON records. A peer that
was stopped by its wall-time cap reached its best no later than a longer run would have: the
ratio is then measured against a lower bound of RecBole's quality, said in `peer_capped`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from perf.common import write_result


def first_reaching(curve: list[tuple[float, float]], level: float) -> float | None:
    """Seconds at which (elapsed_s, valid) first reaches `level`; None if never."""
    for elapsed, value in curve:
        if value >= level:
            return elapsed
    return None


def compare(peer: dict, stage: dict) -> dict:
    target = max(p["valid_ndcg@10"] for p in peer["curve"])
    peer_curve = [(p["elapsed_s"], p["valid_ndcg@10"]) for p in peer["curve"]]
    ours = [(h["elapsed_s"], h["valid_ndcg@10"]) for h in stage["history"]]
    peer_s, ours_s = first_reaching(peer_curve, target), first_reaching(ours, target)
    return {
        "target_valid_ndcg@10": target,
        "peer_seconds": peer_s,
        "distrec_seconds": ours_s,
        "distrec_best_valid_ndcg@10": max(v for _, v in ours),
        "fraction_of_peer_time": None if ours_s is None else ours_s / peer_s,
        "peer_capped": bool(peer.get("capped")),
        "peer_threads": peer.get("threads"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", type=Path, required=True, help="a peer's run.json")
    p.add_argument("--run", type=Path, required=True, help="a distrec run folder")
    p.add_argument("--stage", default="baseline_id_target_only")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    peer = json.loads(args.peer.read_text())
    metrics = json.loads((args.run / "metrics.json").read_text())
    stage = metrics["stages"][args.stage]
    missing = [h["epoch"] for h in stage["history"] if "elapsed_s" not in h]
    if missing:
        raise SystemExit(f"{args.run}: epochs {missing[:5]} have no elapsed_s; rerun the stage")
    result = {
        "peer": str(args.peer),
        "peer_model": peer.get("model"),
        "run": str(args.run),
        "stage": args.stage,
        "distrec_threads": metrics["config"]["train"]["threads"],
        **compare(peer, stage),
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
