"""``check_close``: the one-line numerical check that follows every
derivation.
"""

from __future__ import annotations

import numpy as np


def relative_difference(got, want) -> float:
    """Largest ``|got - want|`` over the arrays, divided by the largest
    ``|want|`` (0 when both are 0).
    """
    got_a = np.asarray(got, dtype=float)
    want_a = np.asarray(want, dtype=float)
    if not got_a.size:
        return 0.0
    diff = float(np.max(np.abs(got_a - want_a)))
    scale = float(np.max(np.abs(want_a)))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def check_close(
    name: str, got, want, rtol: float = 1e-9, atol: float = 0.0
) -> None:
    """Print whether ``got`` matches ``want`` and how closely, relative to the
    size of ``want``.

    Raises ``AssertionError`` when they differ by more than ``atol + rtol *
    |want|`` anywhere, so a stale derivation fails the book build, and
    ``ValueError`` when the shapes differ. Returns nothing: it is a check, not
    a computation.

    >>> check_close("two", 1 + 1, 2)
    two: match (largest relative difference 0)
    """
    got_a = np.asarray(got, dtype=float)
    want_a = np.asarray(want, dtype=float)
    if got_a.shape != want_a.shape:
        raise ValueError(
            f"{name}: shapes differ, got {got_a.shape} and want {want_a.shape}"
        )
    rel = relative_difference(got_a, want_a)
    ok = bool(np.allclose(got_a, want_a, rtol=rtol, atol=atol))
    rel_text = "0" if rel == 0 else f"{rel:.1e}"
    print(
        f"{name}: {'match' if ok else 'MISMATCH'} "
        f"(largest relative difference {rel_text})"
    )
    if not ok:
        raise AssertionError(f"{name}: got {got_a} but want {want_a}")
