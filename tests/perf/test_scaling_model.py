"""The scaling model's arithmetic: ring volumes, backends, overlap."""

import pytest

from perf.scaling_model import Links, Workload, bytes_per_step, layouts, predict

W = Workload(params=7e9, trainable=4e7, compute_s=0.5, tokens_per_step=8000, layers=28)
FAST = Links(intra_gbps=100.0, inter_gbps=10.0, latency_us=0.0)


def test_one_device_has_no_communication():
    for backend in ("ddp", "zero2", "zero3"):
        r = predict(W, backend, 1, 1, FAST)
        assert r["comm_s"] == 0.0 and r["step_s"] == W.compute_s


def test_ring_all_reduce_volume_and_slowest_link():
    # DDP: 2 (W-1)/W x 160 MB of fp32 gradients; 2 GPUs at 100 GB/s -> 1.6 ms.
    assert predict(W, "ddp", 2, 1, FAST)["comm_s"] == pytest.approx(2 * 0.5 * 1.6e8 / 100e9)
    # Across nodes the 10 GB/s link bounds the ring.
    two_nodes = predict(W, "ddp", 1, 2, FAST)["comm_s"]
    assert two_nodes == pytest.approx(2 * 0.5 * 1.6e8 / 10e9)


def test_zero3_moves_all_weights_twice_and_dominates_for_lora():
    assert bytes_per_step(W, "zero3") == pytest.approx(2 * 7e9 * 2 + 4e7 * 4)
    z3, ddp = predict(W, "zero3", 8, 2, FAST), predict(W, "ddp", 8, 2, FAST)
    assert z3["comm_s"] > 50 * ddp["comm_s"]
    assert z3["tokens_per_s"] < ddp["tokens_per_s"]


def test_full_overlap_hides_the_shorter_part():
    serial, hidden = predict(W, "zero3", 8, 1, FAST), predict(W, "zero3", 8, 1, FAST, overlap=1.0)
    assert hidden["step_s"] == pytest.approx(max(serial["compute_s"], serial["comm_s"]))


def test_layouts_fill_nodes_up_to_64():
    assert layouts(64) == [(1, 1), (2, 1), (4, 1), (8, 1), (8, 2), (8, 4), (8, 8)]
