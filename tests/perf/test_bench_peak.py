"""The vendor peak table is found from the names torch.cuda.get_device_name() reports."""

from __future__ import annotations

import pytest

from perf.bench_peak import vendor_peak


@pytest.mark.parametrize(
    ("name", "model", "bf16"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM", 989e12),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756e12),
        ("NVIDIA H200", "H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", "A100", 312e12),
        ("NVIDIA A100 80GB PCIe", "A100", 312e12),
        ("NVIDIA L4", "L4", 121e12),
        ("NVIDIA A10", "A10", 125e12),
    ],
)
def test_known_gpus_have_their_dense_bf16_peak(name, model, bf16):
    got = vendor_peak(name)
    assert got["model"] == model and got["bf16"] == bf16


@pytest.mark.parametrize("name", [None, "", "NVIDIA A10G", "NVIDIA H100 NVL", "Tesla T4"])
def test_unknown_gpus_get_no_vendor_peak(name):
    assert vendor_peak(name) is None
