"""Tests for llmbook.core.hardware: the roofline and the accelerator table."""

import numpy as np
import pytest
from llmbook.core import hardware


def test_roofline_and_ridge():
    assert hardware.ridge_point(989e12, 3.35e12) == pytest.approx(
        295.2, rel=1e-3
    )
    got = hardware.roofline(np.array([1.0, 1000.0]), 989e12, 3.35e12)
    assert got[0] == 3.35e12 and got[1] == 989e12
    assert hardware.decode_intensity() == 1.0
    assert hardware.decode_intensity(batch=64) == 64.0


def test_accelerator_table_dense_rates_and_sizes():
    # the datasheet lists the H100 SXM's BF16 rate with sparsity: 1979 TFLOP/s
    assert hardware.peak_flop_per_s(
        "H100", "SXM", "BF16 Tensor Core", dense=False
    ) == pytest.approx(1979e12)
    assert hardware.peak_flop_per_s(
        "H100", "SXM", "BF16 Tensor Core"
    ) == pytest.approx(989.5e12)
    # a dense figure (FP64 without tensor cores) is not halved
    assert hardware.peak_flop_per_s("H100", "SXM", "FP64") == 34e12
    assert hardware.peak_flop_per_s(
        "A100", "SXM 80 GB datasheet", "BF16 Tensor Core"
    ) == pytest.approx(312e12)
    assert hardware.memory_bytes("H200", "SXM datasheet") == 141e9
    assert hardware.bandwidth_bytes_per_s("H100", "NVL") == 3.9e12


def test_accelerator_table_has_one_memory_and_bandwidth_per_device():
    table = hardware.accelerators()
    per_device = table.groupby(["gpu", "variant"])[
        ["memory_gb", "bandwidth_tb_per_s"]
    ].nunique()
    assert (per_device == 1).all().all()
    assert table["source"].notna().all()


def test_compute_bound_batch_is_the_ridge_point_without_a_cache():
    peak, bw = 989.5e12, 3.35e12
    ridge = hardware.ridge_point(peak, bw)
    # 2 FLOP per parameter per sequence, 2 bytes per parameter read once
    assert hardware.compute_bound_batch(7e9, peak, bw, 2.0) == pytest.approx(
        ridge * 2.0 / 2.0
    )


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: hardware.peak_flop_per_s("H100", "PCIe", "FP32"), "variant"),
        (lambda: hardware.peak_flop_per_s("H100", "SXM", "FP4"), "precision"),
        (lambda: hardware.memory_bytes("B200", "SXM"), "gpu"),
    ],
)
def test_accelerator_lookups_name_the_bad_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()
