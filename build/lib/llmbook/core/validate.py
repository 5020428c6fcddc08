"""Argument checks shared by every module: bad input raises ``ValueError``
naming the argument.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def as_float(name: str, value: object) -> float:
    """Return ``value`` as a finite float, or raise ``ValueError`` naming
    ``name``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, np.number)
    ):
        raise ValueError(
            f"{name} must be a real number, got "
            f"{value!r} ({type(value).__name__})"
        )
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def positive(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise
    ``ValueError``.
    """
    x = as_float(name, value)
    if x <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return x


def nonnegative(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise
    ``ValueError``.
    """
    x = as_float(name, value)
    if x < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return x


def fraction(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` if it lies in (0, 1] (or [0, 1] with
    ``allow_zero``), else raise.
    """
    x = as_float(name, value)
    low_ok = x >= 0 if allow_zero else x > 0
    if not (low_ok and x <= 1):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must lie in {bound}, got {value!r}")
    return x


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is a whole number >= 1, else raise
    ``ValueError``.
    """
    x = positive(name, value)
    if x != int(x):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(x)


def positive_array(name: str, value: object) -> np.ndarray:
    """Return ``value`` as a float array whose entries are finite and > 0,
    else raise.
    """
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(
            f"{name} must be finite and > 0 everywhere, got {value!r}"
        )
    return arr
