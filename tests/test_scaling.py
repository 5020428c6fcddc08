"""Chinchilla law: the sympy derivation, the closed form, scipy, and the repeat model."""

import math

import numpy as np
import pytest
import sympy as sp
from scipy.optimize import minimize_scalar

from llmbook.core import accounting
from llmbook.topics import scaling


def test_loss_hand_value():
    # E1: 1.69 + 406.4 / 67e9**0.34 + 410.7 / 4.1e12**0.28
    want = 1.69 + 406.4 / 67e9**0.34 + 410.7 / 4.1e12**0.28
    assert scaling.chinchilla_loss(67e9, 4.1e12) == pytest.approx(
        want, rel=1e-12
    )
    assert scaling.chinchilla_loss(67e9, 4.1e12) == pytest.approx(
        1.8955, abs=1e-4
    )


def test_loss_broadcasts():
    out = scaling.chinchilla_loss([1e9, 1e10], 1e12)
    assert out.shape == (2,) and out[0] > out[1]


def test_sympy_derivation_matches_closed_form():
    sol = scaling.derive_optimum()
    C, C0, A, B, a, b = sol["symbols"]
    fit = scaling.ChinchillaFit(
        K_N=300.0, K_D=500.0, alpha=0.3, beta=0.4, L0=1.5
    )
    subs = {A: fit.K_N, B: fit.K_D, a: fit.alpha, b: fit.beta, C0: 6}
    for budget in [1e20, 3.7e23, 1e27]:
        n_sym = float(sol["N_opt"].subs(subs).subs(C, budget))
        d_sym = float(sol["D_opt"].subs(subs).subs(C, budget))
        n, d = scaling.optimal_allocation(budget, fit)
        assert n_sym == pytest.approx(n, rel=1e-10)
        assert d_sym == pytest.approx(d, rel=1e-10)


def test_sympy_balance_condition():
    sol = scaling.derive_optimum()
    C, C0, A, B, a, b = sol["symbols"]
    N, D = sp.symbols("N D", positive=True)
    # The eliminated condition is alpha K_N N^-alpha = beta K_D D^-beta, up to sign.
    assert sp.simplify(sol["balance"] - (-A * a / N**a + B * b / D**b)) == 0


def test_multiplier_is_the_marginal_loss_per_flop():
    # mu = -dL*/dC: the loss the last FLOP buys, checked by a finite difference of L at the optimum
    sol = scaling.derive_optimum()
    C, C0, A, B, a, b = sol["symbols"]
    fit = scaling.CHINCHILLA
    subs = {A: fit.K_N, B: fit.K_D, a: fit.alpha, b: fit.beta, C0: 6}
    budget, h = 1e24, 1e-4
    best = [
        scaling.chinchilla_loss(*scaling.optimal_allocation(budget * m))
        for m in (1 - h, 1 + h)
    ]
    slope = (best[1] - best[0]) / (2 * h * budget)
    assert float(sol["mu"].subs(subs).subs(C, budget)) == pytest.approx(
        -slope, rel=1e-6
    )


def test_closed_form_against_scipy_minimiser():
    for budget in [1e21, 1e24, 1e27]:
        res = minimize_scalar(
            lambda t: scaling.chinchilla_loss(
                math.exp(t), budget / (6 * math.exp(t))
            ),
            bounds=(math.log(1e6), math.log(1e16)),
            method="bounded",
            options={"xatol": 1e-12},
        )
        n, _ = scaling.optimal_allocation(budget)
        assert math.exp(res.x) == pytest.approx(n, rel=1e-5)


def test_coefficients_hand_values():
    k = scaling.optimum_coefficients()
    assert k["aN"] == pytest.approx(0.28 / 0.62)
    assert k["aD"] == pytest.approx(0.34 / 0.62)
    G = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    assert k["G"] == pytest.approx(G)
    assert k["kN"] * k["kD"] == pytest.approx(1 / 6)  # N D = C / 6 for every C


def test_direct_fit_and_inverse():
    assert scaling.compute_for_params(1e14) == pytest.approx(1e30)
    n, d = scaling.direct_fit_allocation(1e30)
    assert n == pytest.approx(1e14) and d == pytest.approx(1.7e15)


def test_tokens_for_loss_inverts_loss():
    d = scaling.tokens_for_loss(1.88, 67e9)
    assert scaling.chinchilla_loss(67e9, d) == pytest.approx(1.88, rel=1e-12)
    assert d / 1e12 == pytest.approx(6.70, abs=0.01)


def test_tokens_for_loss_below_floor_raises():
    with pytest.raises(ValueError, match="target_loss"):
        scaling.tokens_for_loss(1.70, 67e9)


def test_besiroglu_refit_is_near_equal_scaling():
    # Besiroglu et al. (2024): a = beta / (alpha + beta) = 0.3658 / 0.7136 = 0.5126
    k = scaling.optimum_coefficients(scaling.BESIROGLU_2024)
    assert k["aN"] == pytest.approx(0.5126, abs=1e-4)


def test_loss_with_repeats_against_the_series():
    C, D = 2.6e24, 4.1e12
    for n in [5e10, 8e10, 1.2e11]:
        processed = C / (6 * n)
        eff = (
            processed
            if processed <= D
            else scaling.effective_tokens(D, processed / D - 1)
        )
        assert scaling.loss_with_repeats(n, C, D) == pytest.approx(
            scaling.chinchilla_loss(n, eff), rel=1e-12
        )
    # with data to spare the repeat model is the plain law
    assert scaling.loss_with_repeats(1e11, 1e23, 4.1e12) == pytest.approx(
        scaling.chinchilla_loss(1e11, 1e23 / 6e11), rel=1e-12
    )
    assert scaling.loss_with_repeats([5e10, 1e11], C, D).shape == (2,)


def test_single_epoch_size_is_the_minimum_when_the_ratio_is_between_ln2_and_1():
    C, D = 2.6e24, 4.1e12
    n1 = scaling.single_epoch_params(C, D)
    assert 6 * n1 * D == pytest.approx(C)
    ratio = scaling.marginal_ratio(n1, D)
    assert math.log(2) < ratio < 1
    res = minimize_scalar(
        lambda t: scaling.loss_with_repeats(math.exp(t), C, D),
        bounds=(math.log(n1 / 3), math.log(n1 * 3)),
        method="bounded",
        options={"xatol": 1e-9},
    )
    assert math.exp(res.x) == pytest.approx(n1, rel=1e-4)
    # ratio 1 is the balance condition: it holds at the closed-form optimum of hw11-q5b
    n, d = scaling.optimal_allocation(1e24)
    assert scaling.marginal_ratio(n, d) == pytest.approx(1.0, rel=1e-10)
    # when the ratio exceeds 1 the data are not binding: the minimum is the unconstrained one
    C2 = 1e23
    n_free, _ = scaling.optimal_allocation(C2)
    assert scaling.marginal_ratio(scaling.single_epoch_params(C2, D), D) > 1
    res = minimize_scalar(
        lambda t: scaling.loss_with_repeats(math.exp(t), C2, D),
        bounds=(math.log(n_free / 10), math.log(n_free * 10)),
        method="bounded",
        options={"xatol": 1e-9},
    )
    assert math.exp(res.x) == pytest.approx(n_free, rel=1e-4)


def test_effective_tokens_series():
    # one extra epoch: D + D/2; two: D + D/2 + D/4
    assert scaling.effective_tokens(4.0, 1) == pytest.approx(6.0)
    assert scaling.effective_tokens(4.0, 2) == pytest.approx(7.0)
    assert scaling.effective_tokens(4.0, 0) == pytest.approx(4.0)


def test_extra_epochs_inverse_and_limits():
    for x in [0.1, 1.25, 3.0]:
        assert scaling.extra_epochs_needed(
            scaling.effective_tokens(4.1e12, x), 4.1e12
        ) == pytest.approx(x)
    assert scaling.extra_epochs_needed(3e12, 4.1e12) == 0.0
    # the student's E2: 6.48T effective from 4.1T unique is 1.25 extra epochs
    assert scaling.extra_epochs_needed(6.48e12, 4.1e12) == pytest.approx(
        1.2532, abs=1e-3
    )
    with pytest.raises(ValueError, match="needed_tokens"):
        scaling.extra_epochs_needed(8.2e12, 4.1e12)


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: scaling.chinchilla_loss(0, 1e12), "N"),
        (lambda: scaling.chinchilla_loss(1e9, [1e12, -1]), "D"),
        (lambda: scaling.chinchilla_loss(1e9, []), "D"),
        (lambda: accounting.training_flops(1e9, "many"), "D"),
        (lambda: scaling.optimal_allocation(-1e20), "C"),
        (lambda: scaling.compute_for_params(1e9, n_coef=0), "n_coef"),
        (lambda: scaling.effective_tokens(1e12, -1), "extra_epochs"),
        (lambda: scaling.ChinchillaFit(alpha=-0.3), "alpha"),
        (lambda: scaling.ChinchillaFit(K_D=0), "K_D"),
        (lambda: scaling.loss_with_repeats(1e11, 1e24, 0), "unique_tokens"),
        (lambda: scaling.single_epoch_params(-1, 1e12), "C"),
        (lambda: scaling.marginal_ratio(1e11, 0), "D"),
    ],
)
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_single_epoch_window_edges_are_where_the_ratio_is_one_and_ln2():
    D = 4.1e12
    c_lo, c_hi = scaling.single_epoch_window(D)
    assert c_lo < c_hi
    n_lo = scaling.single_epoch_params(c_lo, D)
    n_hi = scaling.single_epoch_params(c_hi, D)
    assert scaling.marginal_ratio(n_lo, D) == pytest.approx(1, rel=1e-12)
    assert scaling.marginal_ratio(n_hi, D) == pytest.approx(
        math.log(2), rel=1e-12
    )
    # rho ~ C^-alpha, so the window spans a factor (1 / ln 2)^(1 / alpha)
    assert c_hi / c_lo == pytest.approx(
        (1 / math.log(2)) ** (1 / 0.34), rel=1e-12
    )


def test_data_constrained_optimum_in_the_three_regimes():
    D = 4.1e12
    c_lo, c_hi = scaling.single_epoch_window(D)
    # below the window: the unconstrained Chinchilla optimum, < 1 epoch
    n, passes = scaling.data_constrained_optimum(c_lo / 10, D)
    assert n == pytest.approx(scaling.optimal_allocation(c_lo / 10)[0], 1e-6)
    assert passes < 1
    # inside: exactly one epoch (the proposition of genai-e3)
    c_mid = math.sqrt(c_lo * c_hi)
    n, passes = scaling.data_constrained_optimum(c_mid, D)
    assert n == pytest.approx(c_mid / (6 * D), rel=1e-6)
    assert passes == pytest.approx(1, rel=1e-6)
    # above: more than one pass, and a brute grid over N agrees
    for c in (10 * c_hi, 1000 * c_hi):
        n, passes = scaling.data_constrained_optimum(c, D)
        grid = np.geomspace(n / 3, n * 3, 200001)
        brute = grid[np.argmin(scaling.loss_with_repeats(grid, c, D))]
        assert passes > 1 and n == pytest.approx(brute, rel=1e-4)
        # first-order condition with D_eff = 2 D (1 - 2^(-p / D))
        fit, p = scaling.CHINCHILLA, c / (6 * n)
        d_eff = 2 * D * (1 - 2 ** (-p / D))
        slope = 2 * math.log(2) * 2 ** (-p / D)  # d D_eff / d p
        lhs = fit.alpha * fit.K_N * n**-fit.alpha
        rhs = fit.beta * fit.K_D * d_eff**-fit.beta * p * slope / d_eff
        assert lhs == pytest.approx(rhs, rel=1e-5)


def test_data_constrained_optimum_vectorises():
    C = np.array([1e23, 1e25])
    n, passes = scaling.data_constrained_optimum(C, 4.1e12)
    assert n.shape == passes.shape == (2,)
    assert n[0] == pytest.approx(
        scaling.data_constrained_optimum(1e23, 4.1e12)[0]
    )


def test_plot_budget_sweep_two_labelled_panels_with_the_window():
    from matplotlib import pyplot as plt

    C = np.geomspace(1e23, 1e27, 9)
    n, passes = scaling.data_constrained_optimum(C, 4.1e12)
    window = scaling.single_epoch_window(4.1e12)
    fig = scaling.plot_budget_sweep(
        C, n, passes, scaling.optimal_allocation(C)[0], 4.1e12, window
    )
    assert len(fig.axes) == 2
    # one column at the book's 6.4 in: readable on a phone (issue 20)
    assert fig.get_size_inches()[0] <= 6.4
    assert {a.get_subplotspec().colspan.start for a in fig.axes} == {0}
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        assert len(ax.patches) == 1  # the shaded window
    plt.close(fig)


def test_single_epoch_regime_matches_the_optimum_it_names():
    D = 4.1e12
    for c in (1e23, 2e24, 1e26):
        _, passes = scaling.data_constrained_optimum(c, D)
        want = (
            "below"
            if passes < 1 - 1e-6
            else "once"
            if abs(passes - 1) < 1e-6
            else "above"
        )
        assert scaling.single_epoch_regime(c, D) == want


def test_style_chinchilla_table_short_headers_flag_first():
    """The styler shows the flag column first under the short headers and
    leaves the numbers as they are; one hand-formatted cell."""
    import pandas as pd

    cols = [
        "N",
        "C listed",
        "Gopher units listed",
        "D",
        "6ND",
        "6ND / listed - 1",
        "D / N",
        "C at 20 tokens/param",
        "Gopher units recomputed",
        "flag",
    ]
    row = [67e9, 5.76e23, 1.0, 1.5e12, 6.03e23, 0.0469, 22.4, 5.4e23, 1.0]
    table = pd.DataFrame([row + ["6ND differs"]], columns=cols)
    styler = scaling.style_chinchilla_table(table)
    shown = styler.data
    assert list(shown.columns[:3]) == ["flag", "N", "C"]
    assert "6ND/C-1" in shown.columns and "Gopher (ours)" in shown.columns
    assert shown["C"].item() == 5.76e23
    html = styler.to_html()
    assert "+4.7%" in html and "6.7e+10" in html
