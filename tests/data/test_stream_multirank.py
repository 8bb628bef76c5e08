"""Two real processes (accelerate launch, gloo): each user once per epoch, equal batch counts."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, python

PROBE = Path(__file__).with_name("stream_probe.py")


@pytest.mark.integration
def test_two_ranks_see_each_user_once_and_yield_equal_batches(tmp_path, synth_dir):
    out = tmp_path / "probe.json"
    cmd = [
        python(),
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--multi_gpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29611",
        str(PROBE),
        str(synth_dir / "tiny" / "manifest.json"),
        str(out),
        "--workers",
        "2",
        "--distributed",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=300)
    ranks = [json.loads((tmp_path / f"probe.{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == ranks[0]["length"]
    seen = [u for r in ranks for b in r["batches"] for u in b["users"]]
    assert sorted(seen) == list(range(300))
