"""A catalog split across 2 launched ranks (eval.catalog=sharded) gives exactly the metrics
of one process holding all of it, and batch inference (`distrec recommend --all-users`)
writes every user's top-k, equal to `distrec recommend` and to the serving export."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from distrec.cli import main
from distrec.config import ConfigError
from distrec.models.serving import load_serving
from distrec.train.batch_inference import export_serving
from distrec.train.inference import recommend
from tests.conftest import ROOT, python, tiny_run_config
from tests.distributed.launching import check, run_single, write_config

pytestmark = pytest.mark.integration
BLOCK = "7"  # rows per block: the 60-item target splits into 9 blocks over 2 ranks


def cli(*args: str, ranks: int = 1, port: int = 29691) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="1")
    launch = [python(), "-m", "distrec.cli"]
    if ranks > 1:
        launch = [
            python(),
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "launch/cpu_multiprocess.yaml",
            "--main_process_port",
            str(port),
            "--num_processes",
            str(ranks),
            "-m",
            "distrec.cli",
        ]
    return subprocess.run(
        [*launch, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def run_dir(synth_dir, tmp_path_factory) -> Path:
    """A tiny finished run: pretrained on `tiny`, LoRA-adapted to `tiny-b` (cached MiniLM)."""
    tmp = tmp_path_factory.mktemp("catalog")
    cfg = tiny_run_config(
        synth_dir,
        tmp / "run",
        stages={"baselines": [], "zero_shot": False},
        report_to=[],
    )
    check(run_single(write_config(tmp / "c.yaml", cfg)))
    return tmp / "run"


def test_sharded_catalog_on_two_ranks_equals_one_process_exactly(run_dir, tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    base = ["evaluate", "--run", str(run_dir), "--catalog-block", BLOCK]
    check(cli(*base, "--catalog", "replicated", "--json", str(one)))
    check(cli(*base, "--catalog", "sharded", "--json", str(two), ranks=2, port=29691))
    replicated, sharded = json.loads(one.read_text()), json.loads(two.read_text())
    assert sharded.pop("catalog") == "sharded" and replicated.pop("catalog") == "replicated"
    assert sharded == replicated  # every metric, bit for bit (beyond-accuracy ones too)
    assert replicated["users"] > 100 and replicated["ndcg@10"] > 0


def batch_recommendations(run_dir: Path, out: Path, layout: str, port: int) -> pd.DataFrame:
    args = ["recommend", "--run", str(run_dir), "--domain", "tiny-b", "--all-users"]
    args += ["--out", str(out), "-k", "10", "--catalog", layout, "--catalog-block", BLOCK]
    check(cli(*args, ranks=2, port=port))
    assert not list(out.parent.glob(f".{out.name}*"))  # parts and temporaries are gone
    return pd.read_parquet(out)


def test_batch_inference_writes_every_users_top_k_as_recommend_does(run_dir, tmp_path):
    recs = batch_recommendations(run_dir, tmp_path / "a.parquet", "replicated", 29692)
    split = batch_recommendations(run_dir, tmp_path / "b.parquet", "sharded", 29693)
    assert list(recs.columns) == ["user", "rank", "item", "score"]
    assert recs["user"].nunique() == 160  # every user of tiny-b, train-only ones included
    assert recs.groupby("user")["rank"].apply(list).map(lambda r: r == list(range(1, 11))).all()
    # Both layouts recommend the same items in the same order, with the same scores.
    key = ["user", "rank"]
    a, b = (
        recs.sort_values(key).reset_index(drop=True),
        split.sort_values(key).reset_index(drop=True),
    )
    assert a["item"].tolist() == b["item"].tolist()
    assert (a["score"] - b["score"]).abs().max() < 1e-5
    # Sampled users' histories through `distrec recommend`: the same items, in order.
    sequences = sequences_of(run_dir)
    for seq in sequences[:: len(sequences) // 3][:3]:
        mine = recs[recs["user"] == seq["user"]].sort_values("rank")
        history = [f"item-{i - 1}" for i in seq["items"]]
        text = recommend(str(run_dir), "tiny-b", history, k=10)
        expected = re.findall(r"^\s*\d+\. (\S+)", text, flags=re.M)
        assert mine["item"].tolist() == expected, (seq["user"], text)
        assert not set(mine["item"]) & set(history)  # the whole history is masked


def sequences_of(run_dir: Path) -> list[dict]:
    from distrec.config import load_config
    from distrec.data.manifest import load_manifest, manifest_path
    from distrec.data.shards import read_sequences

    cfg = load_config(run_dir / "config.yaml")
    m = load_manifest(manifest_path(cfg.data.prepared_dir, "tiny-b"))
    return read_sequences(m.shard_urls())


def test_serving_export_recommends_what_the_run_recommends(run_dir, tmp_path):
    folder = export_serving(str(run_dir), "tiny-b", tmp_path / "serve")
    served = load_serving(folder)
    assert served.item_vectors.shape[0] == 60
    seq = sequences_of(run_dir)[3]
    history = [f"item-{i - 1}" for i in seq["items"]]
    text = recommend(str(run_dir), "tiny-b", history, k=10)
    expected = re.findall(r"^\s*\d+\. (\S+)", text, flags=re.M)
    assert [item for item, _ in served.recommend(history, k=10)] == expected
    with pytest.raises(ConfigError, match="not empty"):
        export_serving(str(run_dir), "tiny-b", folder)
    with pytest.raises(ConfigError, match="not a distrec serving export"):
        load_serving(tmp_path)


def test_batch_inference_refuses_to_overwrite_and_needs_an_output(run_dir, tmp_path, capsys):
    out = tmp_path / "recs.parquet"
    out.write_text("precious")
    args = ["recommend", "--run", str(run_dir), "--domain", "tiny-b", "--all-users"]
    assert main([*args, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "precious"
    assert main(["recommend", "--run", str(run_dir), "--domain", "tiny-b"]) == 2
    assert "--all-users" in capsys.readouterr().err
