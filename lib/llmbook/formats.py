"""Floating-point formats bit by bit: sign, exponent and mantissa fields,
the table of ranges and precisions they imply, and the accumulation error of
a low-precision running sum.

A finite normal number with exponent field ``e`` (``E`` bits, bias ``2^(E-1)
- 1``) and mantissa field ``m`` (``M`` bits) is ``(-1)^s 2^(e - bias) (1 +
m / 2^M)``; an all-zero exponent field means a subnormal ``(-1)^s 2^(1 -
bias) m / 2^M``; an all-one exponent field means infinity (``m = 0``) or NaN,
except in ``float8_e4m3fn``, which has no infinities and keeps NaN for the
all-ones pattern only. Derivations: chapter "Number formats, linear
quantization and mixed precision", cme295-formats and scale-precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FloatFormat:
    """Field widths of a binary floating-point format.

    Attributes:
        name: the torch dtype name (``"float16"``, ``"bfloat16"``, ...).
        exp_bits: exponent field width ``E``.
        man_bits: mantissa (fraction) field width ``M``.
        ieee_specials: whether the all-ones exponent is reserved for
            infinities and NaN (IEEE 754); ``False`` for ``float8_e4m3fn``.
    """

    name: str
    exp_bits: int
    man_bits: int
    ieee_specials: bool = True

    @property
    def bits(self) -> int:
        """Total width ``1 + E + M``."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        """Exponent bias ``2^(E-1) - 1``."""
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of this format."""
        return getattr(torch, self.name)


FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("float64", 11, 52),
        FloatFormat("float32", 8, 23),
        FloatFormat("bfloat16", 8, 7),
        FloatFormat("float16", 5, 10),
        FloatFormat("float8_e5m2", 5, 2),
        FloatFormat("float8_e4m3fn", 4, 3, ieee_specials=False),
    )
}

_INT_VIEW = {64: torch.int64, 32: torch.int32, 16: torch.int16, 8: torch.uint8}


def get_format(name) -> FloatFormat:
    """The :class:`FloatFormat` called ``name`` (a string or torch dtype).

    Raises ``ValueError`` naming ``name`` for an unknown format.
    """
    if isinstance(name, torch.dtype):
        name = str(name).removeprefix("torch.")
    if name not in FORMATS:
        raise ValueError(
            f"name must be one of {sorted(FORMATS)}, got {name!r}"
        )
    return FORMATS[name]


def split_bits(x: torch.Tensor):
    """Split a floating tensor into its integer sign, exponent and mantissa
    fields.

    Args:
        x: a tensor of one of the :data:`FORMATS` dtypes, any shape.

    Returns ``(sign, exponent, mantissa)``, int64 tensors of ``x``'s shape,
    read from the stored bits (``Tensor.view`` as an integer type).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    f = get_format(x.dtype)
    raw = x.view(_INT_VIEW[f.bits]).to(torch.int64)
    # masks after the (arithmetic) shifts read the unsigned bit pattern
    mantissa = raw & ((1 << f.man_bits) - 1)
    exponent = (raw >> f.man_bits) & ((1 << f.exp_bits) - 1)
    sign = (raw >> (f.bits - 1)) & 1
    return sign, exponent, mantissa


def compose_value(sign, exponent, mantissa, name) -> torch.Tensor:
    """Rebuild the real value of the fields of format ``name`` as float64.

    Args:
        sign, exponent, mantissa: integer tensors (or ints) of one shape.
        name: a :data:`FORMATS` name or torch dtype.

    Uses the formula of the module docstring, computed in float64 (exact for
    every format narrower than float64; float64 itself is rebuilt with
    ``ldexp``, also exact).
    """
    f = get_format(name)
    s = torch.as_tensor(sign, dtype=torch.int64)
    e = torch.as_tensor(exponent, dtype=torch.int64)
    m = torch.as_tensor(mantissa, dtype=torch.int64)
    e_max = (1 << f.exp_bits) - 1
    m_all = (1 << f.man_bits) - 1
    normal = e > 0
    # significand as an integer, then one exact power-of-two scaling
    sig = torch.where(normal, m + (1 << f.man_bits), m).to(torch.float64)
    power = torch.where(normal, e, torch.ones_like(e)) - f.bias - f.man_bits
    value = torch.ldexp(sig, power.to(torch.float64))
    if f.ieee_specials:
        special = e == e_max
        value = torch.where(
            special & (m == 0), torch.full_like(value, math.inf), value
        )
        value = torch.where(
            special & (m != 0), torch.full_like(value, math.nan), value
        )
    else:
        nan = (e == e_max) & (m == m_all)
        value = torch.where(nan, torch.full_like(value, math.nan), value)
    return torch.where(s == 1, -value, value)


def bit_string(x: float, name) -> str:
    """The bits of ``x`` rounded to format ``name``, as ``"s|exponent|mantissa"``
    (e.g. ``bit_string(1.75, "bfloat16") == "0|01111111|1100000"``)."""
    f = get_format(name)
    s, e, m = split_bits(torch.tensor([float(x)], dtype=f.dtype))
    return (
        f"{int(s)}|{int(e):0{f.exp_bits}b}|{int(m):0{f.man_bits}b}"
    )


def format_properties(name) -> dict:
    """Range and precision of format ``name`` computed from its field widths.

    Returns a dict with ``bits``, ``exp_bits``, ``man_bits``, ``max`` (largest
    finite value), ``min_normal``, ``min_subnormal``, ``eps`` (the gap from 1
    to the next number, ``2^-M``) and ``digits`` (decimal digits resolved,
    ``floor(M log10 2)``, numpy's ``finfo.precision``). The largest finite
    value is ``(2 - 2^-M) 2^(e_max - bias)`` with ``e_max = 2^E - 2`` for
    IEEE formats; ``float8_e4m3fn`` uses the all-ones exponent too, minus the
    NaN pattern, so its largest is ``(2 - 2^(1-M)) 2^(2^E - 1 - bias)``.
    """
    f = get_format(name)
    if f.ieee_specials:
        top = math.ldexp(2 - 2.0**-f.man_bits, (2**f.exp_bits - 2) - f.bias)
    else:
        top = math.ldexp(
            2 - 2.0 ** (1 - f.man_bits), (2**f.exp_bits - 1) - f.bias
        )
    return {
        "format": f.name,
        "bits": f.bits,
        "exp_bits": f.exp_bits,
        "man_bits": f.man_bits,
        "max": top,
        "min_normal": math.ldexp(1.0, 1 - f.bias),
        "min_subnormal": math.ldexp(1.0, 1 - f.bias - f.man_bits),
        "eps": math.ldexp(1.0, -f.man_bits),
        "digits": int(math.floor(f.man_bits * math.log10(2))),
    }


def representable_values(name) -> torch.Tensor:
    """Every finite non-negative value of an 8- or 16-bit format, sorted, as
    float64 (enumerates all bit patterns with sign 0)."""
    f = get_format(name)
    if f.bits > 16:
        raise ValueError(
            f"name must be an 8- or 16-bit format to enumerate, got {name!r}"
        )
    fields = torch.arange(2 ** (f.bits - 1), dtype=torch.int64)
    vals = compose_value(
        torch.zeros_like(fields),
        fields >> f.man_bits,
        fields & ((1 << f.man_bits) - 1),
        f.name,
    )
    return vals[torch.isfinite(vals)].sort().values


def running_sum(x, name) -> np.ndarray:
    """Left-to-right running sum of ``x`` with the accumulator rounded to
    format ``name`` after every addition (as a naive loop in that format
    would do).

    Args:
        x: 1-D array of addends, ``n >= 1``.
        name: ``"float16"``, ``"float32"`` or ``"float64"`` (numpy types).

    Returns the ``n`` partial sums (``numpy.add.accumulate`` in that dtype,
    which rounds after each step).
    """
    dtypes = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
    if name not in dtypes:
        raise ValueError(f"name must be one of {sorted(dtypes)}, got {name!r}")
    arr = np.asarray(x, dtype=dtypes[name])
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("x must be a non-empty 1-D array")
    return np.add.accumulate(arr, dtype=dtypes[name])


def stall_value(increment: float, name) -> float:
    """Smallest running total at which adding ``increment`` (> 0) in format
    ``name`` no longer changes it, with round-to-nearest-even.

    At a total ``t`` in ``[2^k, 2^(k+1))`` the spacing is ``2^(k - M)``; the
    sum ``t + increment`` rounds back to ``t`` once ``increment`` is at most
    half the spacing (exactly half ties to the even neighbour, ``t`` itself,
    when ``t``'s last mantissa bit is 0). So the total stalls at the first
    power of two ``2^k`` with ``2^(k - M - 1) >= increment``.
    """
    f = get_format(name)
    increment = float(increment)
    if not increment > 0:
        raise ValueError(f"increment must be > 0, got {increment!r}")
    k = math.ceil(math.log2(increment)) + f.man_bits + 1
    return math.ldexp(1.0, k)
