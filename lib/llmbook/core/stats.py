"""Statistics the book's evidence rests on: intervals for a median or mean
over seeds, binomial intervals for accuracies, percentile intervals of
bootstrap resamples, and one log-log line fit with its interval.

Numpy and scipy only (no torch). Every function is cross-checked against
scipy in ``tests/test_stats.py``.
"""

from __future__ import annotations

import numpy as np

from llmbook.core.validate import positive_array


def loglog_slope(x, y, level: float = 0.95) -> dict[str, float]:
    """Least-squares slope of log y against log x (y ~ x**slope) with its
    ``level`` confidence interval from Student's t on the residuals (it
    covers the scatter of the points about the line, not the variation
    between seeds). Returns ``{"slope", "lo", "hi", "coef"}`` (y = coef *
    x**slope on the line). Sections
    scale-chinchilla and scale-small-proxies.
    """
    from scipy import stats

    x = positive_array("x", x)
    y = positive_array("y", y)
    if x.shape != y.shape or x.ndim != 1 or x.size < 3:
        raise ValueError("x and y must be 1-D of equal length >= 3")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    fit = stats.linregress(np.log(x), np.log(y))
    half = stats.t.ppf(0.5 + level / 2, x.size - 2) * fit.stderr
    slope = float(fit.slope)
    return {
        "slope": slope,
        "lo": slope - half,
        "hi": slope + half,
        "coef": float(np.exp(fit.intercept)),
    }


def percentile_interval(samples, level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of bootstrap ``samples`` (NaNs, from
    failed fits, dropped).
    """
    s = np.asarray(samples, dtype=float)
    lo, hi = np.nanpercentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(level)


def t_interval(values, level: float = 0.95) -> dict[str, float]:
    """Mean of ``values`` (one number per seed or draw, at least 2) with its
    ``level`` confidence interval from Student's t: ``mean +- t * sd /
    sqrt(n)``. Returns ``{"mean", "lo", "hi", "n"}``.
    """
    from scipy import stats

    level = _level(level)
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError("values must be 1-D, finite, at least 2 of them")
    mean = float(v.mean())
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1)
    half /= np.sqrt(v.size)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": v.size}


def median_range(values) -> dict[str, float]:
    """Median, smallest and largest of ``values`` (one per seed or draw):
    ``{"median", "lo", "hi", "n"}``, the summary the book reports for a
    handful of seeds.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size < 1 or not np.all(np.isfinite(v)):
        raise ValueError("values must be 1-D, finite and not empty")
    return {
        "median": float(np.median(v)),
        "lo": float(v.min()),
        "hi": float(v.max()),
        "n": v.size,
    }


def median_interval(values, level: float = 0.95) -> dict[str, float]:
    """Median of ``values`` with a distribution-free ``level`` interval:
    the order statistics ``x_(k)`` and ``x_(n+1-k)`` that cover the true
    median with probability at least ``level`` whatever the distribution
    (the count of values below it is Binomial(n, 1/2)). The interval for
    repeated timings, which are skewed by a busy machine's slow spells and
    have no seeds. Needs at least 6 values at 95 %. Returns ``{"median",
    "lo", "hi", "n"}``.
    """
    from scipy import stats

    level = _level(level)
    v = np.sort(np.asarray(values, dtype=float))
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise ValueError("values must be 1-D and finite")
    n = v.size
    # largest k with P(Binomial(n, 1/2) < k) <= (1 - level) / 2
    k = int(stats.binom.ppf((1 - level) / 2, n, 0.5))
    if stats.binom.cdf(k, n, 0.5) > (1 - level) / 2:
        k -= 1
    if k < 0:
        raise ValueError(f"{n} values are too few for a {level:.0%} interval")
    return {
        "median": float(np.median(v)),
        "lo": float(v[k]),
        "hi": float(v[n - 1 - k]),
        "n": n,
    }


def binomial_interval(
    successes: int, trials: int, level: float = 0.95
) -> dict[str, float]:
    """Accuracy ``successes / trials`` with its exact (Clopper-Pearson)
    ``level`` interval: the interval every accuracy on ``trials`` test
    examples carries. Returns ``{"p", "lo", "hi", "n"}``.
    """
    from scipy import stats

    level = _level(level)
    ok = isinstance(trials, (int, np.integer)) and trials > 0
    if not ok or isinstance(trials, bool):
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    good = isinstance(successes, (int, np.integer)) and 0 <= successes
    if not good or successes > trials or isinstance(successes, bool):
        raise ValueError(
            f"successes must be an integer in [0, trials], got {successes!r}"
        )
    k, n, a = int(successes), int(trials), 1 - level
    lo = stats.beta.ppf(a / 2, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(1 - a / 2, k + 1, n - k) if k < n else 1.0
    return {"p": k / n, "lo": float(lo), "hi": float(hi), "n": n}


VERDICTS = ("better", "worse", "within noise")


def _bounds(interval, what: str) -> tuple[float, float]:
    """``(lo, hi)`` of an interval given as a pair or as a dict with ``lo``
    and ``hi`` (what the interval functions here return)."""
    if isinstance(interval, dict):
        interval = (interval.get("lo"), interval.get("hi"))
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} must be (lo, hi) or a dict with 'lo' and 'hi': {exc}"
        ) from exc
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
        raise ValueError(f"{what} must be finite with lo <= hi, got {lo, hi}")
    return lo, hi


def compare(a, b, higher_is_better: bool = True) -> str:
    """The verdict on method ``a`` against baseline ``b`` from their
    intervals (pairs ``(lo, hi)`` or the dicts of :func:`t_interval`,
    :func:`median_range`, :func:`binomial_interval`).

    "better" when a's whole interval lies on the good side of b's (above it
    when ``higher_is_better``, below it for a loss), "worse" when it lies
    wholly on the bad side, "within noise" when the two overlap (touching
    counts as overlap). One of :data:`VERDICTS`; the book glues the word,
    never types it.
    """
    a_lo, a_hi = _bounds(a, "a")
    b_lo, b_hi = _bounds(b, "b")
    if not higher_is_better:
        a_lo, a_hi, b_lo, b_hi = -a_hi, -a_lo, -b_hi, -b_lo
    if a_lo > b_hi:
        return "better"
    if a_hi < b_lo:
        return "worse"
    return "within noise"
