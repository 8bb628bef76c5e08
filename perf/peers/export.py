"""Export a distrec prepared domain as RecBole atomic files with distrec's own split.

Runs in distrec's .venv. RecBole never re-splits the data: the files are RecBole's
pre-split `benchmark_filename` files (`<name>.train.inter`, `.valid.inter`, `.test.inter`),
cut at distrec's leave-one-out boundaries (distrec.eval.evaluate.eval_cases):

- a user with >= 3 items: train = items[:-2], valid target = items[-2] with history
  items[:-2], test target = items[-1] with history items[:-1];
- a user with < 3 items: train only.

Two flavours are written, one per RecBole model family:

- `general/<name>/`: one row per interaction (`user_id`, `item_id`, `timestamp`) for Pop/BPR;
- `sequential/<name>/`: one row per prediction (`user_id`, `item_id_list`, `item_id`,
  `timestamp`), i.e. RecBole's own prefix expansion of each training prefix (history
  truncated to the last `max_history` items), plus one valid and one test row per user.

Timestamps are integer per-user positions (0, 1, 2, ...): exact in float32, so RecBole's
float32 time sort cannot merge ties. Both flavours get `<name>.item` listing the whole
catalog (tokens "1".."N"), so every catalog item is rankable even if it never occurs in
training. `split.json` holds distrec's sequences; run_recbole.py checks RecBole's loaded
valid/test rows (target and history) against it, user by user, and fails loudly.

    .venv/bin/python perf/peers/export.py --manifest data/prepared/ml-100k/manifest.json \
        --out data/peers/ml-100k
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distrec.data.manifest import load_manifest
from distrec.data.shards import read_sequences

MAX_HISTORY = 50  # distrec's data.max_history in configs/demo.yaml


def dataset_name(domain: str) -> str:
    """RecBole dataset name: must not collide with RecBole's own dataset property files
    (`ml-100k.yaml` would pull in its settings)."""
    return "distrec_" + domain.replace("-", "_")


def split_user(items: list[int]) -> tuple[list[int], int | None, int | None]:
    """(train prefix, valid target, test target) under distrec's leave-one-out split."""
    if len(items) < 3:
        return list(items), None, None
    return list(items[:-2]), items[-2], items[-1]


def _tokens(items: list[int]) -> str:
    return " ".join(str(i) for i in items)


def export(manifest_path: str | Path, out: str | Path, max_history: int = MAX_HISTORY) -> dict:
    """Write both flavours and split.json under `out`; returns a summary."""
    manifest = load_manifest(manifest_path)
    sequences = read_sequences(manifest.shard_urls())
    num_items = manifest.num_items
    name = dataset_name(manifest.domain)
    out = Path(out)
    gen_dir = out / "general" / name
    seq_dir = out / "sequential" / name
    gen_dir.mkdir(parents=True, exist_ok=True)
    seq_dir.mkdir(parents=True, exist_ok=True)

    gen = {s: ["user_id:token\titem_id:token\ttimestamp:float"] for s in ("train", "valid", "test")}
    seq = {
        s: ["user_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float"]
        for s in ("train", "valid", "test")
    }
    counts = {"users": 0, "eval_users": 0, "train_only_users": 0, "seq_train_rows": 0}
    for s in sequences:
        user, items = int(s["index"]), [int(i) for i in s["items"]]
        if any(i < 1 or i > num_items for i in items):
            raise ValueError(f"user {user}: item index outside 1..{num_items}")
        counts["users"] += 1
        train, valid, test = split_user(items)
        for pos, item in enumerate(train):
            gen["train"].append(f"{user}\t{item}\t{pos}")
        for pos in range(1, len(train)):
            history = train[max(0, pos - max_history) : pos]
            seq["train"].append(f"{user}\t{_tokens(history)}\t{train[pos]}\t{pos}")
            counts["seq_train_rows"] += 1
        if valid is None:
            counts["train_only_users"] += 1
            continue
        counts["eval_users"] += 1
        n = len(items)
        gen["valid"].append(f"{user}\t{valid}\t{n - 2}")
        gen["test"].append(f"{user}\t{test}\t{n - 1}")
        seq["valid"].append(f"{user}\t{_tokens(items[:-2][-max_history:])}\t{valid}\t{n - 2}")
        seq["test"].append(f"{user}\t{_tokens(items[:-1][-max_history:])}\t{test}\t{n - 1}")

    catalog = ["item_id:token", *(str(i) for i in range(1, num_items + 1))]
    for folder, rows in ((gen_dir, gen), (seq_dir, seq)):
        for split, lines in rows.items():
            (folder / f"{name}.{split}.inter").write_text("\n".join(lines) + "\n")
        (folder / f"{name}.item").write_text("\n".join(catalog) + "\n")

    summary = {
        "domain": manifest.domain,
        "dataset": name,
        "manifest": str(Path(manifest_path)),
        "fingerprint": manifest.fingerprint,
        "num_items": num_items,
        "max_history": max_history,
        "timestamps": "per-user integer positions",
        "counts": counts,
    }
    split = {**summary, "sequences": {str(int(s["index"])): list(s["items"]) for s in sequences}}
    (out / "split.json").write_text(json.dumps(split))
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--manifest", required=True, help="manifest.json or a prepared domain folder")
    ap.add_argument(
        "--out", required=True, help="folder for the RecBole files (e.g. data/peers/ml-100k)"
    )
    ap.add_argument("--max-history", type=int, default=MAX_HISTORY)
    args = ap.parse_args(argv)
    print(json.dumps(export(args.manifest, args.out, args.max_history), indent=1))


if __name__ == "__main__":
    main()
