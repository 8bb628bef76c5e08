"""RecBole peers (perf/peers): the export reproduces distrec's leave-one-out boundaries, the
driver's rank rule is distrec's, and table.py recomputes metrics from ranks. No RecBole here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from distrec.data.manifest import load_manifest
from distrec.data.shards import read_sequences
from distrec.data.synth import SynthSpec, synth_domain
from distrec.eval.evaluate import eval_cases, history_mask
from distrec.eval.metrics import ranks_from_scores
from perf.peers import export, protocol, split_check, table


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A small domain with users of every length from 1 up (train-only users included)."""
    root = tmp_path_factory.mktemp("prepared")
    spec = SynthSpec(
        name="peers-synth", users=60, items=80, mean_length=7.0, min_length=1, users_per_shard=16
    )
    return synth_domain(spec, root)


def _read(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


def _by_user(rows: list[list[str]]) -> dict[int, list[list[str]]]:
    out: dict[int, list[list[str]]] = {}
    for r in rows:
        out.setdefault(int(r[0]), []).append(r)
    return {u: sorted(rs, key=lambda r: float(r[-1])) for u, rs in out.items()}


@pytest.mark.parametrize("max_history", [50, 3])
def test_export_has_distrecs_boundaries(synth: Path, tmp_path: Path, max_history: int):
    summary = export.export(synth, tmp_path, max_history=max_history)
    manifest = load_manifest(synth)
    seqs = read_sequences(manifest.shard_urls())
    lengths = [len(s["items"]) for s in seqs]
    assert min(lengths) < 3 <= max(lengths), "the fixture must have train-only users"
    name = summary["dataset"]
    assert name == "distrec_peers_synth"
    gen, seq = tmp_path / "general" / name, tmp_path / "sequential" / name

    # the catalog file lists every item, so every item is rankable
    for folder in (gen, seq):
        items = (folder / f"{name}.item").read_text().split()
        assert items == ["item_id:token", *map(str, range(1, manifest.num_items + 1))]

    by_index = {s["index"]: s["items"] for s in seqs}
    g_train = _by_user(_read(gen / f"{name}.train.inter"))
    s_train = _by_user(_read(seq / f"{name}.train.inter"))
    for user, items in by_index.items():
        prefix = items[:-2] if len(items) >= 3 else items
        rows = g_train[user]
        assert [int(r[1]) for r in rows] == prefix
        assert [float(r[2]) for r in rows] == list(range(len(prefix)))  # exact, no ties
        srows = s_train.get(user, [])
        assert [int(r[2]) for r in srows] == prefix[1:]
        for pos, r in enumerate(srows, start=1):
            assert [int(t) for t in r[1].split()] == prefix[max(0, pos - max_history) : pos]

    for split in ("valid", "test"):
        cases = {c.user: c for c in eval_cases(seqs, split)}
        g_rows = _by_user(_read(gen / f"{name}.{split}.inter"))
        s_rows = _by_user(_read(seq / f"{name}.{split}.inter"))
        assert set(g_rows) == set(s_rows) == set(cases)
        for user, case in cases.items():
            (g,) = g_rows[user]
            (s,) = s_rows[user]
            assert int(g[1]) == int(s[2]) == case.target
            # general models: history = everything in earlier files for that user
            earlier = [int(r[1]) for r in g_train[user]]
            if split == "test":
                earlier.append(int(_by_user(_read(gen / f"{name}.valid.inter"))[user][0][1]))
            assert earlier == case.history
            assert [int(t) for t in s[1].split()] == case.history[-max_history:]

    split_json = json.loads((tmp_path / "split.json").read_text())
    assert {int(u): v for u, v in split_json["sequences"].items()} == by_index
    assert split_json["max_history"] == max_history
    counts = summary["counts"]
    assert counts["eval_users"] == sum(n >= 3 for n in lengths)
    assert counts["train_only_users"] == sum(n < 3 for n in lengths)


def test_driver_expected_split_matches_eval_cases(synth: Path):
    seqs = read_sequences(load_manifest(synth).shard_urls())
    sequences = {str(s["index"]): s["items"] for s in seqs}
    for split in ("valid", "test"):
        want = {c.user: (c.history, c.target) for c in eval_cases(seqs, split)}
        assert split_check.expected_split(sequences, split) == want


def test_driver_rank_rule_is_distrecs():
    """Ties, a target inside the history, and masked items: same ranks as distrec's."""
    from distrec.eval.evaluate import EvalCase

    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (32, 21), generator=gen).double()  # many ties
    cases = []
    for row in range(32):
        hist = torch.randperm(20, generator=gen)[:5].add(1).tolist()
        target = hist[0] if row % 4 == 0 else int(torch.randint(1, 21, (1,), generator=gen))
        cases.append(EvalCase(row, hist, target))
    targets = torch.tensor([c.target for c in cases])
    mask = history_mask(cases, 20)
    ours = protocol.ranks_from_scores(scores.clone(), targets, mask)
    theirs = ranks_from_scores(scores.clone(), targets, mask)
    assert torch.equal(ours, theirs)
    assert protocol.ndcg_at(ours) == pytest.approx(
        torch.where(ours < 10, 1 / torch.log2(ours + 2), torch.zeros_like(ours)).mean().item()
    )


def _ndcg10(ranks: list[float]) -> float:
    return sum(1 / math.log2(r + 2) for r in ranks if r < 10) / len(ranks)


def _ranks_frame(stage: str, valid: list[float], test: list[float]) -> pd.DataFrame:
    rows = [("valid", u, r) for u, r in enumerate(valid)] + [
        ("test", u, r) for u, r in enumerate(test)
    ]
    return pd.DataFrame(
        {
            "stage": stage,
            "split": [s for s, _, _ in rows],
            "user": pd.Series([u for _, u, _ in rows], dtype="int64"),
            "rank": pd.Series([r for _, _, r in rows], dtype="float64"),
        }
    )


def test_table_recomputes_metrics_from_ranks(tmp_path: Path, capsys):
    peers = tmp_path / "peers" / "toy"
    test_ranks = [0.0, 1.0, 9.5, 10.0, 100.0]
    valid_ranks = [2.0, 0.5, 30.0, 4.0, 9.0]
    (peers / "SASRec").mkdir(parents=True)
    _ranks_frame("recbole_sasrec", valid_ranks, test_ranks).to_parquet(
        peers / "SASRec" / "ranks.parquet"
    )
    (peers / "SASRec" / "run.json").write_text(
        json.dumps(
            {
                "model": "SASRec",
                "stage": "recbole_sasrec",
                "epochs_run": 12,
                "best_epoch": 3,
                "wall_s": 1234.5,
                "first_best_elapsed_s": 400.0,
                "threads": 1,
                "stopping_reason": "capped",
                "capped": True,
                # deliberately wrong: the table must not read metrics from run.json
                "protocol_metrics": {"test": {"ndcg@10": 0.99}},
            }
        )
    )
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    adapt_test = [0.0, 0.0, 3.0, 50.0, 8.0]
    pd.concat(
        [
            _ranks_frame("adapt", [1.0] * 5, adapt_test),
            _ranks_frame("baseline_id_target_only", [0.0] * 5, [5.0] * 5),
        ]
    ).to_parquet(run / "ranks.parquet")
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "world_size": 2,
                "stages": {
                    "adapt": {
                        "valid": {"ndcg@10": 1.0},
                        "test": {"ndcg@10": _ndcg10(adapt_test)},
                        "history": [
                            {"epoch": e, "valid_ndcg@10": v} for e, v in enumerate([0.1, 0.3, 0.2])
                        ],
                        "wall_s": 99.0,
                    },
                    "baseline_id_target_only": {"valid": {}, "test": {}, "history": []},
                    "zero_shot": {"valid": {}, "test": {}},  # no ranks: left out
                },
            }
        )
    )
    table.main(["--domain", "toy", "--peers", str(peers), "--runs", str(run)])
    out = json.loads((peers / "peers.json").read_text())
    rows = {r["stage"]: r for r in out["rows"]}
    assert set(rows) == {"recbole_sasrec", "adapt", "baseline_id_target_only"}
    sas = rows["recbole_sasrec"]
    assert sas["test"]["ndcg@10"] == pytest.approx(_ndcg10(test_ranks))
    assert sas["test"]["recall@10"] == pytest.approx(3 / 5)
    assert sas["test"]["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 10.5) / 5)
    assert sas["valid"]["ndcg@10"] == pytest.approx(_ndcg10(valid_ranks))
    assert sas["capped"] and sas["epochs"] == 12 and sas["best_epoch"] == 3
    adapt = rows["adapt"]
    assert adapt["test"]["ndcg@10"] == pytest.approx(_ndcg10(adapt_test))
    assert adapt["reported_test_ndcg@10_drift"] == pytest.approx(0.0, abs=1e-12)
    assert adapt["best_epoch"] == 1 and adapt["epochs"] == 3
    assert rows["baseline_id_target_only"]["test"]["ndcg@10"] == pytest.approx(1 / math.log2(7))
    assert out["same_users"]
    md = (peers / "peers.md").read_text()
    assert "capped: lower bound" in md
    assert f"{_ndcg10(test_ranks):.4f}" in md
    assert "zero_shot has no ranks" in capsys.readouterr().out


def test_table_rejects_malformed_ranks(tmp_path: Path):
    bad = tmp_path / "ranks.parquet"
    pd.DataFrame({"stage": ["a"], "split": ["train"], "user": [0], "rank": [1.0]}).to_parquet(bad)
    with pytest.raises(ValueError, match="split"):
        table.read_ranks(bad)


class _FakeDataset:
    """Just what split_check.check_split reads of a RecBole dataset (ids = tokens here)."""

    uid_field, iid_field, time_field = "user_id", "item_id", "timestamp"
    item_id_list_field, item_list_length_field = "item_id_list", "item_length"

    def __init__(self, path: Path, seq: bool, width: int):
        rows = _read(path)
        self.inter_feat = {
            "user_id": torch.tensor([int(r[0]) + 1 for r in rows]),  # id 0 is [PAD]
            "item_id": torch.tensor([int(r[-2]) for r in rows]),
            "timestamp": torch.tensor([float(r[-1]) for r in rows]),
        }
        if seq:
            lists = [[int(t) for t in r[1].split()] for r in rows]
            mat = torch.zeros(len(rows), width, dtype=torch.long)
            for i, lst in enumerate(lists):
                mat[i, : len(lst)] = torch.tensor(lst, dtype=torch.long)
            self.inter_feat["item_id_list"] = mat
            self.inter_feat["item_length"] = torch.tensor([len(lst) for lst in lists])


@pytest.mark.parametrize("seq", [False, True])
def test_driver_split_check_passes_on_export_and_fails_loudly(synth: Path, tmp_path: Path, seq):
    import numpy as np

    summary = export.export(synth, tmp_path, max_history=4)
    split = json.loads((tmp_path / "split.json").read_text())
    folder = tmp_path / ("sequential" if seq else "general") / summary["dataset"]
    name = summary["dataset"]
    sets = [_FakeDataset(folder / f"{name}.{s}.inter", seq, 4) for s in ("train", "valid", "test")]
    cat = np.array([-1, *range(1, summary["num_items"] + 1)], dtype=np.int64)  # id -> catalog
    users = np.arange(-1, len(split["sequences"]), dtype=np.int64)
    ids = split_check.IdMaps.of(cat, users, summary["num_items"])
    sets = split_check.RecBoleSets(*sets)
    cases = split_check.check_split(sets, split, ids, seq=seq, max_hist=4)
    seqs = read_sequences(load_manifest(synth).shard_urls())
    assert [(u, (h, t)) for u, (h, t) in cases["test"]] == [
        (c.user, (c.history, c.target)) for c in eval_cases(seqs, "test")
    ]
    sets.test.inter_feat["item_id"][0] = (
        sets.test.inter_feat["item_id"][0] % summary["num_items"] + 1
    )
    with pytest.raises(split_check.SplitMismatch, match="test: user"):
        split_check.check_split(sets, split, ids, seq=seq, max_hist=4)


def test_id_maps_invert_each_other():
    import numpy as np

    cat = np.array([-1, 3, 1, 2], dtype=np.int64)  # RecBole item id -> catalog index
    users = np.array([-1, 7, 5], dtype=np.int64)
    ids = split_check.IdMaps.of(cat, users, num_items=3)
    assert ids.rid_of_cat.tolist() == [0, 2, 3, 1]
    assert all(cat[ids.rid_of_cat[i]] == i for i in (1, 2, 3))
    assert ids.rid_of_user == {7: 1, 5: 2}


def test_chunk_ranks_moves_recbole_columns_to_the_catalog():
    """RecBole's item-id columns are permuted back to catalog columns before ranking."""
    gen = torch.Generator().manual_seed(1)
    perm = (
        torch.randperm(12, generator=gen) + 1
    )  # RecBole id r (1..12) holds catalog item perm[r-1]
    col = torch.cat([torch.zeros(1, dtype=torch.long), perm])
    by_catalog = torch.randint(0, 5, (6, 13), generator=gen).double()  # ties included
    raw = torch.zeros(6, 13, dtype=torch.float64)
    raw[:, 1:] = by_catalog[:, perm]
    chunk = [(u, ([1 + u, 2 + u], 1 + u if u % 2 else 9)) for u in range(6)]
    got = protocol.chunk_ranks(raw, chunk, col, num_items=12)
    exclude = torch.zeros(6, 13, dtype=torch.bool)
    for r, (_, (h, t)) in enumerate(chunk):
        exclude[r, h], exclude[r, t] = True, False
    want = ranks_from_scores(by_catalog, torch.tensor([t for _, (_, t) in chunk]), exclude)
    assert torch.equal(got, want)


def test_driver_log_line_round_trips_through_curve_from_log(tmp_path: Path, capsys):
    from perf.peers import recbole_training

    clock = recbole_training.EpochClock("SASRec", cap_min=None)
    for epoch, (loss, ndcg) in enumerate([(0.9, 0.05), (0.7, 0.0812345)]):
        clock.start_epoch(epoch)
        clock.record_validation(valid_t0=clock.epoch_t0, ndcg=ndcg, loss=loss)
    log = tmp_path / "run.log"
    log.write_text(capsys.readouterr().out)
    parsed = recbole_training.curve_from_log(log, "SASRec")
    assert [c["epoch"] for c in parsed] == [0, 1]
    assert [c["valid_ndcg@10"] for c in parsed] == [0.05, 0.08123]
    assert [c["train_loss"] for c in parsed] == [0.9, 0.7]


def test_driver_wall_cap_stops_before_an_epoch_that_would_end_past_it():
    from perf.peers import recbole_training

    clock = recbole_training.EpochClock("GRU4Rec", cap_min=1.0)
    clock.start_epoch(0)  # no curve yet: the first epoch always runs
    clock.curve.append({"epoch": 0})
    clock.durations.append(61.0)  # one epoch took longer than the whole cap
    with pytest.raises(recbole_training.WallCap, match=r"epoch 1 would end past the 1\.0 min cap"):
        clock.start_epoch(1)
