"""Quantization by hand: k-means codebooks and linear (scale and zero-point) integer arithmetic.

The book's one quantization module. It holds the general building blocks (integer ranges for
any bit width, scale and zero point from the endpoint equations, quantize and dequantize,
per-channel symmetric weights, int32 bias, fixed-point rescaling, k-means codebooks) and, on
top of them, integer-only inference of the small CNN of :mod:`llmbook.cnn`.
Derivations: chapter "Pruning and quantization", hw11-q7b-i to hw11-q7b-vii.

Conventions: a real value ``r`` is represented by an integer ``q`` as ``r = S (q - Z)`` with a
positive float scale ``S`` and an integer zero point ``Z`` in the integer range.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F


def _check_bits(bits: int) -> int:
    if int(bits) != bits or bits < 1:
        raise ValueError(f"bits must be a positive integer, got {bits}")
    return int(bits)


# --- integer ranges, scale and zero point ------------------------------------------------------

def qrange(bits: int, signed: bool = True) -> tuple[int, int]:
    """The integer range ``(q_min, q_max)`` of ``bits``-bit integers: ``(-2^(b-1), 2^(b-1) - 1)``
    when ``signed``, else ``(0, 2^b - 1)``."""
    bits = _check_bits(bits)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def scale_zero_point(r_min: float, r_max: float, bits: int = 8, signed: bool = True):
    """Scale ``S`` and zero point ``Z`` that map ``[r_min, r_max]`` onto the ``bits``-bit range.

    From the endpoint equations ``r_max = S (q_max - Z)`` and ``r_min = S (q_min - Z)``:
    subtracting gives ``S = (r_max - r_min) / (q_max - q_min)``; then
    ``Z = round(q_min - r_min / S)``, an integer so that ``r = 0`` is represented exactly.
    The range is first widened to contain 0 (hw11-q7b-iv, v). Returns ``(S, Z)`` as (float, int).
    """
    q_min, q_max = qrange(bits, signed)
    r_min, r_max = min(float(r_min), 0.0), max(float(r_max), 0.0)
    if r_max == r_min:
        return 1.0, 0 if signed else q_min
    scale = (r_max - r_min) / (q_max - q_min)
    zero_point = int(round(q_min - r_min / scale))
    return scale, min(max(zero_point, q_min), q_max)


def storage_dtype(bits: int, signed: bool = True) -> torch.dtype:
    """The smallest torch integer dtype that holds ``bits``-bit integers."""
    bits = _check_bits(bits)
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if bits <= 16 and signed else torch.int32 if bits <= 32 else torch.int64


def linear_quantize(r: torch.Tensor, scale, zero_point, bits: int = 8, signed: bool = True):
    """``q = clamp(round(r / S) + Z, q_min, q_max)`` in :func:`storage_dtype`.

    ``scale`` and ``zero_point`` may be tensors that broadcast against ``r`` (per channel).
    """
    q_min, q_max = qrange(bits, signed)
    q = torch.round(r / scale) + zero_point
    return q.clamp(q_min, q_max).to(storage_dtype(bits, signed))


def linear_dequantize(q: torch.Tensor, scale, zero_point) -> torch.Tensor:
    """``r = S (q - Z)`` as float32."""
    return scale * (q.to(torch.float32) - zero_point)


def symmetric_weight_scale(weight: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-output-channel symmetric scales ``S_c = max |w_c| / q_max`` (zero point 0).

    Args:
        weight: ``(C_out, ...)``. Returns ``(C_out,)`` float32. With ``Z = 0`` the range
        ``[-max|w_c|, max|w_c|]`` maps onto ``[-q_max, q_max]`` (``q_min`` unused).
    """
    _, q_max = qrange(bits, True)
    w_max = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    return torch.where(w_max > 0, w_max / max(q_max, 1), torch.ones_like(w_max))


def quantize_weight(weight: torch.Tensor, bits: int = 8):
    """Symmetric per-output-channel quantization: returns ``(q_w, S_w)``, ``q_w`` of weight's shape."""
    scale = symmetric_weight_scale(weight, bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return linear_quantize(weight.detach(), scale.reshape(shape), 0, bits, True), scale


def quantize_bias(bias: torch.Tensor, weight_scale: torch.Tensor, input_scale: float):
    """int32 bias ``q_b = round(b / (S_W S_X))`` with zero point 0, so it adds straight onto the
    int32 accumulator of ``sum q_w (q_x - Z_x)``, whose scale is ``S_W S_X``."""
    return torch.round(bias.detach() / (weight_scale * input_scale)).to(torch.int32)


def fixed_point_multiplier(m: torch.Tensor, bits: int = 31):
    """Write each positive real multiplier as ``m = m0 * 2^-shift`` with integer
    ``m0`` in ``[2^(bits-1), 2^bits)``. Returns ``(m0, shift)`` as int64 tensors."""
    m = torch.as_tensor(m, dtype=torch.float64)
    if (m <= 0).any():
        raise ValueError("m must be positive")
    exponent = torch.floor(torch.log2(m)) + 1                    # m = f 2^exponent, f in [0.5, 1)
    m0 = torch.round(m * 2.0 ** (bits - exponent)).to(torch.int64)
    shift = (bits - exponent).to(torch.int64)
    carry = m0 >= 2 ** bits                                       # rounding up to 2^bits
    return torch.where(carry, m0 // 2, m0), torch.where(carry, shift - 1, shift)


def rescale(acc: torch.Tensor, m0, shift, zero_point: int, bits: int = 8, signed: bool = True):
    """Integer-only requantization ``q = clamp(Z + round(acc * m0 / 2^shift))``.

    Args:
        acc: int32 accumulator ``(B, C, ...)``; ``m0``, ``shift``: from
            :func:`fixed_point_multiplier`, scalars or ``(C,)`` (per channel).
    The product is formed in int64 and rounded half up by adding ``2^(shift-1)`` before the
    arithmetic right shift: no float anywhere.
    """
    shape = (1, -1) + (1,) * (acc.dim() - 2)
    m0 = torch.as_tensor(m0, dtype=torch.int64).reshape(shape if torch.numel(torch.as_tensor(m0)) > 1 else ())
    shift = torch.as_tensor(shift, dtype=torch.int64).reshape(m0.shape)
    prod = acc.to(torch.int64) * m0
    q = ((prod + (1 << (shift - 1))) >> shift) + zero_point
    q_min, q_max = qrange(bits, signed)
    return q.clamp(q_min, q_max).to(storage_dtype(bits, signed))
