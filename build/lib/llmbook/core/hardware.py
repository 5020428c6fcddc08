"""Hardware arithmetic: one accelerator table, the roofline, device-seconds,
rental cost and wall-clock time.

Torch-free (numpy only), so a reader can use it anywhere. The roofline is the
book's one: :func:`ridge_point` and :func:`roofline` (attainable FLOP/s at an
arithmetic intensity), and for decoding :func:`decode_step_seconds` and
:func:`compute_bound_batch` (the same two roofs in seconds per step, with a KV
cache). Derived in the Fermi chapter (hw11-q5) and the lecture walkthrough
"What training costs" (cme295-memory). Units: bytes, seconds, FLOP, FLOP/s,
bytes/s, USD.
"""

from __future__ import annotations

import math

import numpy as np

from llmbook.core.validate import (
    fraction,
    nonnegative,
    positive,
    positive_array,
)


SECONDS_PER_DAY = 86_400.0


PETA = 1e15


def devices_needed(total_bytes: float, device_bytes: float) -> int:
    """Smallest whole number of devices of ``device_bytes`` memory that hold
    ``total_bytes``.
    """
    ratio = positive("total_bytes", total_bytes) / positive(
        "device_bytes", device_bytes
    )
    return math.ceil(ratio - 1e-12)


def memory_bound_latency(
    total_bytes: float, bandwidth_bytes_per_s: float
) -> float:
    """Seconds to stream ``total_bytes`` once from memory: the floor on one
    decoding step.
    """
    bandwidth = positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    return positive("total_bytes", total_bytes) / bandwidth


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


def ridge_point(peak_flop_per_s: float, bandwidth_bytes_per_s: float) -> float:
    """Arithmetic intensity (FLOP per byte) where the roofline's slope meets
    its flat top: peak / bandwidth. Section cme295-memory.
    """
    return positive("peak_flop_per_s", peak_flop_per_s) / positive(
        "bandwidth_bytes_per_s", bandwidth_bytes_per_s
    )


def roofline(intensity, peak_flop_per_s: float, bandwidth_bytes_per_s: float):
    """Attainable FLOP/s at arithmetic ``intensity`` (FLOP per byte, scalar or
    array): min(peak, intensity * bandwidth). Section cme295-memory.
    """
    x = positive_array("intensity", intensity)
    peak = positive("peak_flop_per_s", peak_flop_per_s)
    bw = positive("bandwidth_bytes_per_s", bandwidth_bytes_per_s)
    out = np.minimum(peak, x * bw)
    return float(out) if out.ndim == 0 else out


def decode_intensity(
    batch: float = 1.0,
    bytes_per_param: float = 2.0,
    flop_per_param: float = 2.0,
) -> float:
    """FLOP per byte of one decoding step of a dense model for ``batch``
    sequences, counting weight reads only: ``flop_per_param * batch /
    bytes_per_param`` (1 for batch 1 in bf16). Section cme295-memory.
    """
    return (
        positive("flop_per_param", flop_per_param)
        * positive("batch", batch)
        / positive("bytes_per_param", bytes_per_param)
    )


# --- The accelerator table (data/accelerators.csv)
# ------------------------------------------------------------


def accelerators():
    """The book's one accelerator table, a ``pandas.DataFrame`` with one row
    per (gpu, variant, precision): ``peak`` in ``unit`` (TFLOP/s or TOP/s)
    as the source lists it, ``with_sparsity`` (True where the listed figure
    assumes 2:4 structured sparsity, twice the dense rate), ``memory_gb``,
    ``bandwidth_tb_per_s``, power, price and rent where the source gives them,
    and the ``source``.
    """
    from llmbook.book.data import load_csv

    return load_csv("accelerators.csv")


def _accelerator_rows(gpu: str, variant: str):
    table = accelerators()
    rows = table[(table["gpu"] == gpu) & (table["variant"] == variant)]
    if rows.empty:
        pairs = sorted(set(zip(table["gpu"], table["variant"])))
        raise ValueError(
            f"gpu, variant: no accelerator {gpu!r}, {variant!r}; "
            f"the table has {pairs}"
        )
    return rows


def peak_flop_per_s(
    gpu: str, variant: str, precision: str, dense: bool = True
) -> float:
    """Peak rate (FLOP/s, or integer operations per second) of ``gpu``
    ``variant`` at ``precision`` from :func:`accelerators`; with ``dense``,
    a figure listed with sparsity is halved (the dense rate, the one dense
    training and inference can reach).
    """
    rows = _accelerator_rows(gpu, variant)
    row = rows[rows["precision"] == precision]
    if row.empty:
        raise ValueError(
            f"precision: {gpu} {variant} lists {list(rows['precision'])}, "
            f"not {precision!r}"
        )
    row = row.iloc[0]
    peak = float(row["peak"]) * 1e12
    return peak / 2 if dense and bool(row["with_sparsity"]) else peak


def memory_bytes(gpu: str, variant: str) -> float:
    """Memory (bytes) of ``gpu`` ``variant`` from :func:`accelerators`."""
    return float(_accelerator_rows(gpu, variant)["memory_gb"].iloc[0]) * 1e9


def bandwidth_bytes_per_s(gpu: str, variant: str) -> float:
    """Memory bandwidth (bytes/s) of ``gpu`` ``variant`` from
    :func:`accelerators`.
    """
    rows = _accelerator_rows(gpu, variant)
    return float(rows["bandwidth_tb_per_s"].iloc[0]) * 1e12
