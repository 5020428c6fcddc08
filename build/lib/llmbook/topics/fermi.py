"""Fermi estimates for large models: memory, storage, bandwidth, compute,
money, energy.

Each function is one line of arithmetic with its units spelled out, so a
notebook can chain them and a reader can check any step. Derived in the chapter
"Fermi estimation for a 100-trillion-parameter model" (hw11-q5). Units: bytes,
seconds, FLOP, USD, joules.
"""

from __future__ import annotations

import math


from llmbook.core.validate import positive

BOLTZMANN = 1.380649e-23  # J/K, exact in the 2019 SI
MEGABYTE = 1e6  # bytes; storage prices in the source are per decimal megabyte


def storage_cost_per_year(
    total_bytes: float, usd_per_megabyte: float, lifetime_years: float = 1.0
) -> float:
    """Yearly cost (USD) of storage at ``usd_per_megabyte``, replaced every
    ``lifetime_years``.
    """
    megabytes = positive("total_bytes", total_bytes) / MEGABYTE
    price = positive("usd_per_megabyte", usd_per_megabyte)
    return megabytes * price / positive("lifetime_years", lifetime_years)


def tokens_per_minute(seconds_per_token: float) -> float:
    """Tokens produced in one minute of strictly sequential (autoregressive)
    decoding.
    """
    return 60.0 / positive("seconds_per_token", seconds_per_token)


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
