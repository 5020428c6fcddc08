"""Fermi estimates for large models: memory, storage, bandwidth, compute,
money, energy.

Each function is one line of arithmetic with its units spelled out, so a
notebook can chain them and a reader can check any step. Derived in the chapter
"Fermi estimation for a 100-trillion-parameter model" (hw11-q5). Units: bytes,
seconds, FLOP, USD, joules.
"""

from __future__ import annotations

import math

import numpy as np

from llmbook.core.validate import fraction, nonnegative, positive, positive_array

BOLTZMANN = 1.380649e-23  # J/K, exact in the 2019 SI
SECONDS_PER_DAY = 86_400.0
PETA = 1e15
MEGABYTE = 1e6  # bytes; storage prices in the source are per decimal megabyte


def model_bytes(n_params: float, bytes_per_param: float = 2.0) -> float:
    """Bytes to hold ``n_params`` weights at ``bytes_per_param`` each (2 for
    fp16/bf16).
    """
    return positive("n_params", n_params) * positive(
        "bytes_per_param", bytes_per_param
    )


def devices_needed(total_bytes: float, device_bytes: float) -> int:
    """Smallest whole number of devices of ``device_bytes`` memory that hold
    ``total_bytes``.
    """
    ratio = positive("total_bytes", total_bytes) / positive(
        "device_bytes", device_bytes
    )
    return math.ceil(ratio - 1e-12)


def storage_cost_per_year(
    total_bytes: float, usd_per_megabyte: float, lifetime_years: float = 1.0
) -> float:
    """Yearly cost (USD) of storage at ``usd_per_megabyte``, replaced every
    ``lifetime_years``.
    """
    megabytes = positive("total_bytes", total_bytes) / MEGABYTE
    price = positive("usd_per_megabyte", usd_per_megabyte)
    return megabytes * price / positive("lifetime_years", lifetime_years)


def memory_bound_latency(
    total_bytes: float, bandwidth_bytes_per_s: float
) -> float:
    """Seconds to stream ``total_bytes`` once from memory: the floor on one
    decoding step.
    """
    bandwidth = positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    return positive("total_bytes", total_bytes) / bandwidth


def tokens_per_minute(seconds_per_token: float) -> float:
    """Tokens produced in one minute of strictly sequential (autoregressive)
    decoding.
    """
    return 60.0 / positive("seconds_per_token", seconds_per_token)


def activation_bytes_per_token(
    n_layers: int, n_heads: int, d_head: int, bytes_per_value: float = 2.0
) -> float:
    """Bytes of the per-layer hidden state one token carries: n_layers *
    n_heads * d_head values.
    """
    width = positive("n_heads", n_heads) * positive("d_head", d_head)
    return (
        positive("n_layers", n_layers)
        * width
        * positive("bytes_per_value", bytes_per_value)
    )


def kv_cache_bytes_per_token(
    n_layers: int, d_model: int, bytes_per_value: float = 2.0
) -> float:
    """Bytes of keys and values one token of context leaves in the cache: 2
    n_layers d_model values.

    Assumes full multi-head attention (every head keeps its own keys and
    values, as in GPT-3); grouped-query attention divides this by the number of
    heads per key-value head. Section hw11-q5g: every decoding step reads the
    whole cache of every sequence in flight.
    """
    width = positive("n_layers", n_layers) * positive("d_model", d_model)
    return 2.0 * width * positive("bytes_per_value", bytes_per_value)


def decode_step_seconds(
    n_params: float,
    batch,
    flop_per_s: float,
    bandwidth_bytes_per_s: float,
    bytes_per_param: float = 2.0,
    kv_bytes_per_seq: float = 0.0,
    utilization: float = 1.0,
    flop_per_param_token: float = 2.0,
):
    """Roofline time (s) of one decoding step that emits one token for each of
    ``batch`` sequences.

    The step must both execute ``flop_per_param_token * n_params * batch`` FLOP
    at ``utilization * flop_per_s`` and read the weights plus ``batch`` KV
    caches of ``kv_bytes_per_seq`` bytes at ``bandwidth_bytes_per_s``; it takes
    the longer of the two (compute and memory traffic overlap perfectly).
    Attention FLOP are neglected. ``batch`` may be a scalar or an array
    (sequences). Section hw11-q5g.
    """
    b = positive_array("batch", batch)
    n = positive("n_params", n_params)
    flop = positive("flop_per_param_token", flop_per_param_token) * n * b
    compute = flop / (
        positive("flop_per_s", flop_per_s)
        * fraction("utilization", utilization)
    )
    weights = n * positive("bytes_per_param", bytes_per_param)
    traffic = weights + b * nonnegative("kv_bytes_per_seq", kv_bytes_per_seq)
    out = np.maximum(
        compute,
        traffic / positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s),
    )
    return float(out) if out.ndim == 0 else out


def compute_bound_batch(
    n_params: float,
    flop_per_s: float,
    bandwidth_bytes_per_s: float,
    bytes_per_param: float = 2.0,
    kv_bytes_per_seq: float = 0.0,
    utilization: float = 1.0,
    flop_per_param_token: float = 2.0,
) -> float:
    """Batch (sequences) at which the two roofline times of
    :func:`decode_step_seconds` are equal.

    Without a KV cache this is the ridge point ``utilization * flop_per_s *
    bytes_per_param / (flop_per_param_token * bandwidth)``, independent of
    ``n_params``; each sequence's cache raises it, and returns ``math.inf``
    when the cache alone keeps every batch memory-bound. Section hw11-q5g.
    """
    rate = positive("flop_per_s", flop_per_s) * fraction(
        "utilization", utilization
    )
    bw = positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    n = positive("n_params", n_params)
    per_seq_compute = (
        positive("flop_per_param_token", flop_per_param_token) * n / rate
    )
    per_seq_traffic = nonnegative("kv_bytes_per_seq", kv_bytes_per_seq) / bw
    if per_seq_compute <= per_seq_traffic:
        return math.inf
    weights_time = n * positive("bytes_per_param", bytes_per_param) / bw
    return weights_time / (per_seq_compute - per_seq_traffic)


def petaflop_day() -> float:
    """FLOP in one petaFLOP/s-day: 1e15 FLOP/s sustained for 86 400 s."""
    return PETA * SECONDS_PER_DAY


def device_seconds(
    flop: float, flop_per_s: float, utilization: float = 1.0
) -> float:
    """Device-seconds to execute ``flop`` at ``utilization`` of a peak of
    ``flop_per_s``.
    """
    rate = positive("flop_per_s", flop_per_s) * fraction(
        "utilization", utilization
    )
    return positive("flop", flop) / rate


def rental_cost(
    flop: float,
    flop_per_s: float,
    usd_per_device_hour: float,
    utilization: float = 1.0,
) -> float:
    """USD to rent enough device-hours to execute ``flop``."""
    hours = device_seconds(flop, flop_per_s, utilization) / 3600.0
    return hours * positive("usd_per_device_hour", usd_per_device_hour)


def wall_clock_seconds(
    flop: float, flop_per_s: float, n_devices: float, utilization: float = 1.0
) -> float:
    """Seconds for ``n_devices`` working in perfect parallel to execute
    ``flop``.
    """
    return device_seconds(flop, flop_per_s, utilization) / positive(
        "n_devices", n_devices
    )


def inference_flop(
    n_params: float, n_tokens: float, flop_per_param_token: float = 2.0
) -> float:
    """Forward-pass FLOP for ``n_tokens``: about 2 per parameter per token
    (multiply and add).
    """
    per_token = positive("flop_per_param_token", flop_per_param_token)
    return (
        positive("n_params", n_params)
        * positive("n_tokens", n_tokens)
        * per_token
    )


def landauer_joules(
    bits_erased: float = 1.0, temperature_k: float = 300.0
) -> float:
    """Minimum energy (J) to erase ``bits_erased`` bits at
    ``temperature_k``: k_B T ln 2 per bit.
    """
    per_bit = (
        BOLTZMANN * positive("temperature_k", temperature_k) * math.log(2)
    )
    return positive("bits_erased", bits_erased) * per_bit


def words_from_tokens(n_tokens: float, tokens_per_word: float = 1.4) -> float:
    """English words in ``n_tokens`` tokens at ``tokens_per_word``."""
    return positive("n_tokens", n_tokens) / positive(
        "tokens_per_word", tokens_per_word
    )


def geometric_mean(low: float, high: float) -> float:
    """sqrt(low * high): the midpoint of a range on a log scale."""
    return math.sqrt(positive("low", low) * positive("high", high))
