"""One run config, every backend: single process, DDP, ZeRO-2, ZeRO-3 and two "nodes"
on loopback train to the same loss curve and validation NDCG@10 (fp32, within 1e-4).

The global batch is the same everywhere: 2 processes x 1 loader worker each, or
1 process x 2 workers with 2-step gradient accumulation (the stream numbers its
readers so both read the same batches in the same steps). The domain is sized so
every reader gets the same number of full batches.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, python
from tests.distributed.launching import (
    TOL,
    check,
    env_for,
    metrics,
    parity_config,
    run_launch,
    run_single,
    write_config,
)

pytestmark = pytest.mark.integration


def curve(out) -> tuple[list[float], float]:
    stage = metrics(out)["stages"]["pretrain"]
    return [h["loss"] for h in stage["history"]], stage["valid"]["ndcg@10"]


@pytest.fixture(scope="module")
def reference(even_dir, tmp_path_factory):
    """The single-process run every backend is compared with."""
    tmp = tmp_path_factory.mktemp("single")
    cfg = write_config(tmp / "c.yaml", parity_config(even_dir, tmp / "run"))
    check(run_single(cfg, "data.num_workers=2", "train.grad_accum=2"))
    assert metrics(tmp / "run")["world_size"] == 1
    return curve(tmp / "run")


def assert_same(got, want) -> None:
    (losses, ndcg), (ref_losses, ref_ndcg) = got, want
    assert len(losses) == len(ref_losses) == 2
    assert losses == pytest.approx(ref_losses, abs=TOL), (losses, ref_losses)
    assert ndcg == pytest.approx(ref_ndcg, abs=TOL), (ndcg, ref_ndcg)


@pytest.mark.parametrize(("backend", "port"), [("ddp", 29641), ("zero2", 29642), ("zero3", 29643)])
def test_backend_matches_single_process(backend, port, reference, even_dir, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        parity_config(even_dir, tmp_path / "run", distributed={"strategy": backend}),
    )
    check(run_launch(backend, cfg, port))
    m = metrics(tmp_path / "run")
    assert m["world_size"] == 2 and m["strategy"] == backend
    assert_same(curve(tmp_path / "run"), reference)


def node_command(way: str, cfg, rank: int, port: int) -> tuple[list[str], dict]:
    env = env_for("ddp")
    if way == "slurm":  # the per-node script multinode.sbatch runs through srun
        env.update(
            SLURM_NNODES="2",
            SLURM_NODEID=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            GPUS="1",
            ACCELERATE_CONFIG="launch/cpu_multiprocess.yaml",
            PATH=f"{Path(python()).parent}:{env['PATH']}",
        )
        return ["bash", "launch/slurm/node.sh", str(cfg)], env
    # the static-rendezvous template, pointed at loopback (not `--cpu`: that makes each
    # node a separate one-process run; ACCELERATE_USE_CPU=1 from env_for keeps it on CPU)
    cmd = [
        python(),
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "launch/multinode_static.yaml",
        "--num_machines",
        "2",
        "--num_processes",
        "2",
        "--machine_rank",
        str(rank),
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "-m",
        "distrec.train",
        "--config",
        str(cfg),
    ]
    return cmd, env


@pytest.mark.parametrize(("way", "port"), [("static", 29644), ("slurm", 29645)])
def test_two_nodes_on_loopback_match_single_process(way, port, reference, even_dir, tmp_path):
    """Two per-node launches, --num_machines 2, one process each, on 127.0.0.1: the
    static-rendezvous template and the Slurm per-node script."""
    cfg = write_config(
        tmp_path / "c.yaml",
        parity_config(even_dir, tmp_path / "run", distributed={"strategy": "ddp"}),
    )
    nodes = []
    for rank in (0, 1):
        cmd, env = node_command(way, cfg, rank, port)
        nodes.append(
            subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, (stdout[-2000:], stderr[-4000:])
    m = metrics(tmp_path / "run")
    assert m["world_size"] == 2
    assert_same(curve(tmp_path / "run"), reference)


def test_end_to_end_lora_under_zero3_matches_single_process(even_dir, tmp_path):
    """LoRA on the LM itself, ZeRO-3 sharding it: each rank encodes its batch's distinct
    items in length groups (a different number of items per rank, the same number of LM
    calls), and the result equals one process reading the same batches."""
    sections = {
        "model": {
            "mode": "end_to_end",
            "max_text_tokens": 16,
            "length_buckets": 3,
            "lm_dropout": 0.0,
            "id_dropout": 0.0,
            "user_tower": {"layers": 1, "heads": 2, "dropout": 0.0},
        },
        "peft": {"method": "lora", "r": 4, "dropout": 0.0},
        # Negatives from the other rank have no single-process equivalent with accumulation.
        "distributed": {"cross_rank_negatives": False},
        "eval": {"batch_size": 64, "max_users": 64},
    }
    single = write_config(
        tmp_path / "s.yaml", parity_config(even_dir, tmp_path / "single", **sections)
    )
    check(run_single(single, "data.num_workers=2", "train.grad_accum=2"))
    sharded = parity_config(even_dir, tmp_path / "zero3", **sections)
    sharded["distributed"]["strategy"] = "zero3"
    check(run_launch("zero3", write_config(tmp_path / "z.yaml", sharded), 29646))
    assert_same(curve(tmp_path / "zero3"), curve(tmp_path / "single"))
