"""Checks that RecBole loaded exactly distrec's split (targets, histories, order) for every
user before anything is trained: a different split would make the comparison unfair."""

from __future__ import annotations

import numpy as np


class SplitMismatch(RuntimeError):
    """RecBole's loaded split differs from distrec's: the comparison would be unfair."""


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
