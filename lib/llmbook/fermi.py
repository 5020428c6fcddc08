"""Fermi estimates for large models: memory, storage, bandwidth, compute, money, energy.

Each function is one line of arithmetic with its units spelled out, so a notebook can
chain them and a reader can check any step. Derived in the chapter "Fermi estimation
for a 100-trillion-parameter model" (hw11-q5). Units: bytes, seconds, FLOP, USD, joules.
"""

from __future__ import annotations

import math

from ._validate import fraction, positive

BOLTZMANN = 1.380649e-23  # J/K, exact in the 2019 SI
SECONDS_PER_DAY = 86_400.0
PETA = 1e15
MEGABYTE = 1e6  # bytes; storage prices in the source are per decimal megabyte


def model_bytes(n_params: float, bytes_per_param: float = 2.0) -> float:
    """Bytes to hold ``n_params`` weights at ``bytes_per_param`` each (2 for fp16/bf16)."""
    return positive("n_params", n_params) * positive("bytes_per_param", bytes_per_param)


def devices_needed(total_bytes: float, device_bytes: float) -> int:
    """Smallest whole number of devices of ``device_bytes`` memory that hold ``total_bytes``."""
    return math.ceil(positive("total_bytes", total_bytes) / positive("device_bytes", device_bytes) - 1e-12)


def storage_cost_per_year(total_bytes: float, usd_per_megabyte: float, lifetime_years: float = 1.0) -> float:
    """Yearly cost (USD) of storage bought at ``usd_per_megabyte`` and replaced every ``lifetime_years``."""
    megabytes = positive("total_bytes", total_bytes) / MEGABYTE
    return megabytes * positive("usd_per_megabyte", usd_per_megabyte) / positive("lifetime_years", lifetime_years)


def memory_bound_latency(total_bytes: float, bandwidth_bytes_per_s: float) -> float:
    """Seconds to stream ``total_bytes`` once from memory: the floor on one decoding step."""
    return positive("total_bytes", total_bytes) / positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)


def tokens_per_minute(seconds_per_token: float) -> float:
    """Tokens produced in one minute of strictly sequential (autoregressive) decoding."""
    return 60.0 / positive("seconds_per_token", seconds_per_token)


def activation_bytes_per_token(n_layers: int, n_heads: int, d_head: int, bytes_per_value: float = 2.0) -> float:
    """Bytes of the per-layer hidden state one token carries: n_layers * n_heads * d_head values."""
    width = positive("n_heads", n_heads) * positive("d_head", d_head)
    return positive("n_layers", n_layers) * width * positive("bytes_per_value", bytes_per_value)


def petaflop_day() -> float:
    """FLOP in one petaFLOP/s-day: 1e15 FLOP/s sustained for 86 400 s."""
    return PETA * SECONDS_PER_DAY


def device_seconds(flop: float, flop_per_s: float, utilization: float = 1.0) -> float:
    """Device-seconds to execute ``flop`` at ``utilization`` of a peak of ``flop_per_s``."""
    return positive("flop", flop) / (positive("flop_per_s", flop_per_s) * fraction("utilization", utilization))


def rental_cost(flop: float, flop_per_s: float, usd_per_device_hour: float, utilization: float = 1.0) -> float:
    """USD to rent enough device-hours to execute ``flop``."""
    hours = device_seconds(flop, flop_per_s, utilization) / 3600.0
    return hours * positive("usd_per_device_hour", usd_per_device_hour)


def wall_clock_seconds(flop: float, flop_per_s: float, n_devices: float, utilization: float = 1.0) -> float:
    """Seconds for ``n_devices`` working in perfect parallel to execute ``flop``."""
    return device_seconds(flop, flop_per_s, utilization) / positive("n_devices", n_devices)


def inference_flop(n_params: float, n_tokens: float, flop_per_param_token: float = 2.0) -> float:
    """Forward-pass FLOP to process ``n_tokens``: about 2 per parameter per token (a multiply and an add)."""
    return positive("n_params", n_params) * positive("n_tokens", n_tokens) * positive("flop_per_param_token", flop_per_param_token)


def landauer_joules(bits_erased: float = 1.0, temperature_k: float = 300.0) -> float:
    """Minimum energy (J) to erase ``bits_erased`` bits at ``temperature_k``: k_B T ln 2 per bit."""
    return positive("bits_erased", bits_erased) * BOLTZMANN * positive("temperature_k", temperature_k) * math.log(2)


def words_from_tokens(n_tokens: float, tokens_per_word: float = 1.4) -> float:
    """English words in ``n_tokens`` tokens at ``tokens_per_word``."""
    return positive("n_tokens", n_tokens) / positive("tokens_per_word", tokens_per_word)


def geometric_mean(low: float, high: float) -> float:
    """sqrt(low * high): the midpoint of a range on a log scale."""
    return math.sqrt(positive("low", low) * positive("high", high))
