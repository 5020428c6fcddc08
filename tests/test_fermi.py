"""Every Fermi formula against a value worked out by hand, plus bad input."""

import math

import pytest

from llmbook import fermi


def test_model_bytes_fp16():
    assert fermi.model_bytes(1e9) == 2e9            # 1B params x 2 B = 2 GB
    assert fermi.model_bytes(1e14, 2) == 2e14       # GPT-6: 200 TB
    assert fermi.model_bytes(175e9, 4) == 7e11      # fp32 GPT-3: 700 GB


def test_devices_needed_rounds_up_and_is_exact_on_boundaries():
    assert fermi.devices_needed(2e14, 100e9) == 2000
    assert fermi.devices_needed(2e12, 141e9) == 15   # 2000 / 141 = 14.18 -> 15
    assert fermi.devices_needed(1.0, 100e9) == 1


def test_storage_cost_per_year():
    # 200 TB = 2e8 MB; 2e8 x 0.00005 USD = 10,000 USD; DRAM 2e8 x 0.004 = 800,000 USD
    assert fermi.storage_cost_per_year(2e14, 0.00005) == pytest.approx(1e4)
    assert fermi.storage_cost_per_year(2e14, 0.0040) == pytest.approx(8e5)
    assert fermi.storage_cost_per_year(2e14, 0.0040, lifetime_years=4) == pytest.approx(2e5)


def test_latency_and_tokens_per_minute():
    s = fermi.memory_bound_latency(2e14, 4.8e12)
    assert s == pytest.approx(41.6667, rel=1e-4)     # 200 TB / 4.8 TB/s
    assert fermi.tokens_per_minute(s) == pytest.approx(1.44)
    gpt3 = fermi.memory_bound_latency(3.5e11, 4.8e12)
    assert gpt3 == pytest.approx(0.0729167, rel=1e-5)
    assert fermi.tokens_per_minute(gpt3) == pytest.approx(822.857, rel=1e-5)


def test_activation_bytes_gpt3():
    # 96 layers x 96 heads x 128 dims x 2 bytes = 2,359,296 bytes
    assert fermi.activation_bytes_per_token(96, 96, 128) == 2_359_296
    assert 3.5e11 / fermi.activation_bytes_per_token(96, 96, 128) == pytest.approx(148_349.34, rel=1e-6)


def test_petaflop_day_and_rental():
    assert fermi.petaflop_day() == 8.64e19
    hours = fermi.device_seconds(8.64e19, 1.98e15) / 3600
    assert hours == pytest.approx(12.1212, rel=1e-5)
    assert fermi.rental_cost(8.64e19, 1.98e15, 1.5) == pytest.approx(18.1818, rel=1e-5)
    # GPT-3: 3640 PF-days x 18.18 USD = 66,182 USD
    assert fermi.rental_cost(3640 * 8.64e19, 1.98e15, 1.5) == pytest.approx(66181.8, rel=1e-5)
    # at 30 % utilisation it costs 1/0.3 times as much
    assert fermi.rental_cost(8.64e19, 1.98e15, 1.5, utilization=0.3) == pytest.approx(18.1818 / 0.3, rel=1e-5)


def test_wall_clock_gpt6():
    # 1e30 FLOP / (3e7 x 1.98e15 FLOP/s) = 1.6835e7 s = 4676.4 h
    assert fermi.wall_clock_seconds(1e30, 1.98e15, 30e6) / 3600 == pytest.approx(4676.4, rel=1e-4)


def test_inference_flop_and_cost():
    assert fermi.inference_flop(1e12, 1e6) == 2e18
    assert fermi.rental_cost(2e18, 1.98e15, 1.5) == pytest.approx(0.420875, rel=1e-5)


def test_landauer():
    e = fermi.landauer_joules(1, 300)
    assert e == pytest.approx(2.8710e-21, rel=1e-4)
    assert fermi.landauer_joules(32, 300) * 1.98e15 == pytest.approx(1.8191e-4, rel=1e-4)


def test_words_and_geometric_mean():
    assert fermi.words_from_tokens(1.4e6) == pytest.approx(1e6)
    assert fermi.geometric_mean(50, 250) == pytest.approx(math.sqrt(12500))


@pytest.mark.parametrize("call, arg", [
    (lambda: fermi.model_bytes(-1), "n_params"),
    (lambda: fermi.model_bytes(0), "n_params"),
    (lambda: fermi.model_bytes("1e9"), "n_params"),
    (lambda: fermi.model_bytes(1e9, float("nan")), "bytes_per_param"),
    (lambda: fermi.devices_needed(1e12, 0), "device_bytes"),
    (lambda: fermi.storage_cost_per_year(1e12, -0.1), "usd_per_megabyte"),
    (lambda: fermi.memory_bound_latency(1e12, None), "bandwidth_bytes_per_s"),
    (lambda: fermi.device_seconds(1e20, 1e15, utilization=1.5), "utilization"),
    (lambda: fermi.device_seconds(1e20, 1e15, utilization=0), "utilization"),
    (lambda: fermi.activation_bytes_per_token(96, True, 128), "n_heads"),
    (lambda: fermi.landauer_joules(32, -300), "temperature_k"),
    (lambda: fermi.wall_clock_seconds(1e30, 1e15, 0), "n_devices"),
])
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()
