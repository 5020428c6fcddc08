"""Tests for llmbook.core.stats, each against scipy or a hand value."""

import numpy as np
import pytest
from scipy import stats as sst

from llmbook.core import stats


def test_t_interval_matches_scipy():
    v = np.array([0.91, 0.93, 0.90, 0.95, 0.92])
    got = stats.t_interval(v)
    lo, hi = sst.t.interval(0.95, 4, loc=v.mean(), scale=sst.sem(v))
    assert got["mean"] == pytest.approx(v.mean())
    assert (got["lo"], got["hi"]) == pytest.approx((lo, hi))
    assert got["n"] == 5
    wider = stats.t_interval(v, level=0.99)
    assert wider["lo"] < got["lo"] and wider["hi"] > got["hi"]


def test_median_range_by_hand():
    got = stats.median_range([3.0, 1.0, 2.0, 10.0])
    assert got == {"median": 2.5, "lo": 1.0, "hi": 10.0, "n": 4}


@pytest.mark.parametrize("k, n", [(0, 20), (7, 20), (20, 20), (912, 1000)])
def test_binomial_interval_matches_scipy_exact(k, n):
    got = stats.binomial_interval(k, n)
    ci = sst.binomtest(k, n).proportion_ci(0.95, method="exact")
    assert got["p"] == k / n and got["n"] == n
    assert (got["lo"], got["hi"]) == pytest.approx((ci.low, ci.high))


def test_percentile_interval_drops_nans():
    s = np.r_[np.arange(101.0), np.nan]
    assert stats.percentile_interval(s, 0.9) == pytest.approx((5.0, 95.0))


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: stats.t_interval([1.0]), "values"),
        (lambda: stats.t_interval([1.0, np.nan]), "values"),
        (lambda: stats.t_interval([1.0, 2.0], level=1.0), "level"),
        (lambda: stats.median_range([]), "values"),
        (lambda: stats.binomial_interval(3, 0), "trials"),
        (lambda: stats.binomial_interval(5, 4), "successes"),
        (lambda: stats.binomial_interval(True, 4), "successes"),
        (lambda: stats.binomial_interval(1.5, 4), "successes"),
    ],
)
def test_bad_arguments_name_themselves(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_loglog_slope_recovers_a_power_law_and_its_interval():
    w = np.array([64, 128, 256, 512, 1024])
    exact = stats.loglog_slope(w, 3.0 * w**-0.5)
    assert exact["slope"] == pytest.approx(-0.5) and exact[
        "coef"
    ] == pytest.approx(3.0)
    assert exact["hi"] - exact["lo"] == pytest.approx(0.0, abs=1e-9)
    noisy = stats.loglog_slope(
        w, 3.0 * w**-0.5 * np.array([1, 1.2, 0.9, 1.1, 1])
    )
    assert noisy["lo"] < -0.5 < noisy["hi"]
    # the interval is scipy's t interval on the slope
    from scipy import stats as sst

    fit = sst.linregress(
        np.log(w), np.log(3.0 * w**-0.5 * np.array([1, 1.2, 0.9, 1.1, 1]))
    )
    assert noisy["hi"] - noisy["slope"] == pytest.approx(
        sst.t.ppf(0.975, 3) * fit.stderr
    )
    with pytest.raises(ValueError, match="level"):
        stats.loglog_slope(w, w**-0.5, level=1.5)
    with pytest.raises(ValueError, match="x and y"):
        stats.loglog_slope(w[:2], w[:2] ** -0.5)


@pytest.mark.parametrize("n", [6, 7, 10, 25, 26, 101])
def test_median_interval_matches_scipy_quantile_test(n):
    from scipy import stats as sps

    x = np.random.default_rng(n).lognormal(size=n)
    got = stats.median_interval(x)
    want = sps.quantile_test(x, q=np.median(x), p=0.5).confidence_interval()
    assert (got["lo"], got["hi"]) == (want.low, want.high)
    assert got["median"] == np.median(x) and got["n"] == n
    with pytest.raises(ValueError, match="too few"):
        stats.median_interval(x[:5])
