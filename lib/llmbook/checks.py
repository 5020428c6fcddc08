"""``check_close``: the one-line numerical check that follows every derivation."""

from __future__ import annotations

import numpy as np


def check_close(name: str, got, want, rtol: float = 1e-9, atol: float = 0.0) -> float:
    """Print whether ``got`` matches ``want`` and return the largest absolute difference.

    Raises ``AssertionError`` when they differ by more than ``atol + rtol * |want|``
    anywhere, so a stale derivation fails the book build. Shapes must agree exactly.

    >>> check_close("two", 1 + 1, 2)
    two: match (max |diff| = 0)
    0.0
    """
    got_a = np.asarray(got, dtype=float)
    want_a = np.asarray(want, dtype=float)
    if got_a.shape != want_a.shape:
        raise ValueError(f"{name}: shapes differ, got {got_a.shape} and want {want_a.shape}")
    diff = float(np.max(np.abs(got_a - want_a))) if got_a.size else 0.0
    ok = bool(np.allclose(got_a, want_a, rtol=rtol, atol=atol))
    print(f"{name}: {'match' if ok else 'MISMATCH'} (max |diff| = {diff:.3g})")
    if not ok:
        raise AssertionError(f"{name}: got {got_a} but want {want_a}")
    return diff
