"""Checks that RecBole loaded exactly distrec's split (targets, histories, order) for every
user before anything is trained: a different split would make the comparison unfair."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class SplitMismatch(RuntimeError):
    """RecBole's loaded split differs from distrec's: the comparison would be unfair."""


@dataclass(frozen=True)
class IdMaps:
    """RecBole's internal ids against distrec's indices, both ways."""

    cat: np.ndarray  # catalog index of each RecBole item id, -1 for [PAD]
    users: np.ndarray  # distrec user index of each RecBole user id, -1 for [PAD]
    rid_of_user: dict[int, int]  # distrec user -> RecBole user id
    rid_of_cat: np.ndarray  # [N+1] RecBole item id of each catalog index (0 for padding)

    @classmethod
    def of(cls, cat: np.ndarray, users: np.ndarray, num_items: int) -> IdMaps:
        """Both directions from RecBole id -> catalog index (`cat`) and -> user (`users`)."""
        rid_of_cat = np.zeros(num_items + 1, dtype=np.int64)
        rid_of_cat[cat[cat >= 0]] = np.nonzero(cat >= 0)[0]
        rid_of_user = {int(u): i for i, u in enumerate(users) if u >= 0}
        return cls(cat, users, rid_of_user, rid_of_cat)


@dataclass(frozen=True)
class RecBoleSets:
    """RecBole's loaded train, valid and test datasets (what check_split compares)."""

    train: Any
    valid: Any
    test: Any


def id_maps(dataset, num_items: int) -> IdMaps:
    """RecBole's vocabularies as IdMaps, after checking it holds exactly items 1..num_items."""
    item_tokens = dataset.field2id_token[dataset.iid_field]
    cat = np.array([-1 if t == "[PAD]" else int(t) for t in item_tokens], dtype=np.int64)
    real = cat[cat >= 0]
    if sorted(real.tolist()) != list(range(1, num_items + 1)):
        raise SplitMismatch(
            f"RecBole's item vocabulary has {len(real)} items, distrec's catalog {num_items}"
        )
    user_tokens = dataset.field2id_token[dataset.uid_field]
    users = np.array([-1 if t == "[PAD]" else int(t) for t in user_tokens], dtype=np.int64)
    return IdMaps.of(cat, users, num_items)


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


def check_split(
    sets: RecBoleSets, split: dict, ids: IdMaps, *, seq: bool, max_hist: int
) -> dict[str, list]:
    """Fail loudly unless RecBole's train/valid/test rows are exactly distrec's split.

    Returns the eval cases: {"valid"/"test": sorted [(user, (history, target))]}.
    """
    sequences = split["sequences"]
    got = _train_rows(sets.train, ids, seq)
    problems = _train_problems(got, sequences, seq, max_hist)
    cases = {}
    for name, ds in (("valid", sets.valid), ("test", sets.test)):
        want = expected_split(sequences, name)
        problems += _eval_row_problems(name, ds, want, ids, seq=seq, max_hist=max_hist)
        if not seq:
            problems += _general_history_problems(name, want, got, sequences)
        cases[name] = sorted(want.items())
    if problems:
        head = "\n  ".join(problems[:20])
        raise SplitMismatch(f"{len(problems)} split mismatches:\n  {head}")
    return cases


def _train_rows(ds, ids: IdMaps, seq: bool) -> dict[int, list]:
    """user -> [(target, history or None, timestamp)] of RecBole's train rows, in time order."""
    uid, target, ts, hist = _rows(ds, ids.cat, ids.users, seq)
    got: dict[int, list] = {}
    for r in np.lexsort((ts, uid)):
        got.setdefault(int(uid[r]), []).append(
            (int(target[r]), tuple(hist[r]) if seq else None, float(ts[r]))
        )
    return got


def _train_problems(got: dict[int, list], sequences: dict, seq: bool, max_hist: int) -> list[str]:
    """train: general = the prefix items[:-2] (all items for < 3) in order; sequential =
    one row per position >= 1 of that prefix, history = the prefix before it (last max_hist)."""
    problems = []
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
    return problems


def _eval_row_problems(
    name: str, ds, want: dict, ids: IdMaps, *, seq: bool, max_hist: int
) -> list[str]:
    """One row per distrec eval user, with distrec's target (and history, if sequential)."""
    uid, target, _, hist = _rows(ds, ids.cat, ids.users, seq)
    problems = []
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
    return problems


def _general_history_problems(
    name: str, want: dict, got: dict[int, list], sequences: dict
) -> list[str]:
    """General models score from the user embedding; RecBole's notion of the user's history
    is what it trained on (train rows) plus, for test, the valid target."""
    problems = []
    for u, (history, _) in want.items():
        known = [t for t, _, _ in got.get(u, [])]
        if name == "test":
            known = [*known, sequences[str(u)][-2]]
        if known != history:
            problems.append(f"{name}: user {u} train history differs from distrec's")
    return problems
