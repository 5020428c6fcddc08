"""Chinchilla scaling law: loss, compute, and the compute-optimal split of N
and D.

Notation (glossary): ``N`` parameters, ``D`` training tokens, ``C`` training
FLOP, ``C0`` FLOP per parameter per token (6), ``L0`` irreducible loss, ``K_N``
and ``K_D`` the size and data coefficients (the homework's A and B), ``alpha``
and ``beta`` their exponents. Derived in the chapter "Fermi estimation for a
100-trillion-parameter model", section hw11-q5b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from llmbook.core.validate import as_float, positive, positive_array


@dataclass(frozen=True)
class ChinchillaFit:
    """Constants of L(N, D) = K_N / N**alpha + K_D / D**beta + L0.

    The defaults are Hoffmann et al. (2022), approach 3, as the homework quotes
    them (the paper and the homework call K_N and K_D "A" and "B").
    """

    K_N: float = 406.4
    K_D: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28
    L0: float = 1.69

    def __post_init__(self) -> None:
        for name in ("K_N", "K_D", "alpha", "beta"):
            positive(name, getattr(self, name))
        as_float("L0", self.L0)


CHINCHILLA = ChinchillaFit()
# Besiroglu et al. (2024), Table 1: approach 3 refitted to the data read off
# the paper's figure.
BESIROGLU_2024 = ChinchillaFit(
    K_N=482.01, K_D=2085.43, alpha=0.3478, beta=0.3658, L0=1.8172
)


def chinchilla_loss(N, D, fit: ChinchillaFit = CHINCHILLA):
    """Predicted loss (nats per token) of a model with ``N`` parameters trained
    on ``D`` tokens.

    ``N`` and ``D`` may be scalars or arrays (broadcast together); all entries
    must be > 0.
    """
    N_ = positive_array("N", N)
    D_ = positive_array("D", D)
    out = fit.K_N / N_**fit.alpha + fit.K_D / D_**fit.beta + fit.L0
    return float(out) if out.ndim == 0 else out


def derive_optimum() -> dict[str, sp.Expr]:
    """Solve min K_N/N^alpha + K_D/D^beta s.t. C0 N D = C with a Lagrange
    multiplier mu, in sympy.

    Returns a dict with the symbols used and the closed forms ``N_opt`` and
    ``D_opt`` as sympy expressions in ``C, C0, K_N, K_D, alpha, beta`` (section
    hw11-q5b).
    """
    N, D, C, C0, kn, kd, a, b, mu = sp.symbols(
        "N D C C_0 K_N K_D alpha beta mu", positive=True
    )
    lagrangian = kn / N**a + kd / D**b + mu * (C0 * N * D - C)
    dN, dD = sp.diff(lagrangian, N), sp.diff(lagrangian, D)
    # N dL/dN - D dL/dD = 0 eliminates mu: alpha K_N / N^alpha = beta K_D /
    # D^beta.
    balance = sp.simplify(N * dN - D * dD)
    (n_opt,) = sp.solve(balance.subs(D, C / (C0 * N)), N)
    d_opt = sp.simplify(C / (C0 * n_opt))
    mu_opt = sp.simplify(sp.solve(dN.subs({N: n_opt, D: d_opt}), mu)[0])
    return {
        "symbols": (C, C0, kn, kd, a, b),
        "balance": balance,
        "N_opt": n_opt,
        "D_opt": d_opt,
        "mu": mu_opt,
    }


def optimum_coefficients(
    fit: ChinchillaFit = CHINCHILLA, c0: float = 6.0
) -> dict[str, float]:
    """Coefficients of the closed form N_opt = kN * C**aN, D_opt = kD * C**aD.

    With gamma = (alpha K_N / (beta K_D))**(1/(alpha+beta)):
    N_opt = gamma (C/c0)**(beta/(alpha+beta)) and D_opt = gamma**-1
    (C/c0)**(alpha/(alpha+beta)). The key ``"G"`` holds gamma.
    """
    c0 = positive("c0", c0)
    s = fit.alpha + fit.beta
    G = (fit.alpha * fit.K_N / (fit.beta * fit.K_D)) ** (1 / s)
    aN, aD = fit.beta / s, fit.alpha / s
    return {"G": G, "kN": G * c0**-aN, "aN": aN, "kD": c0**-aD / G, "aD": aD}


def optimal_allocation(C, fit: ChinchillaFit = CHINCHILLA, c0: float = 6.0):
    """Compute-optimal ``(N_opt, D_opt)`` for budget(s) ``C`` FLOP under
    ``fit``.
    """
    C_ = positive_array("C", C)
    k = optimum_coefficients(fit, c0)
    n, d = k["kN"] * C_ ** k["aN"], k["kD"] * C_ ** k["aD"]
    return (float(n), float(d)) if C_.ndim == 0 else (n, d)


def direct_fit_allocation(
    C, n_coef: float = 0.1, d_coef: float = 1.7, exponent: float = 0.5
):
    """The paper's direct fit: N_opt = n_coef * C**exponent, D_opt = d_coef
    * C**exponent.
    """
    C_ = positive_array("C", C)
    n_coef, d_coef = positive("n_coef", n_coef), positive("d_coef", d_coef)
    exponent = positive("exponent", exponent)
    n, d = n_coef * C_**exponent, d_coef * C_**exponent
    return (float(n), float(d)) if C_.ndim == 0 else (n, d)


def compute_for_params(
    N: float, n_coef: float = 0.1, exponent: float = 0.5
) -> float:
    """Invert the direct fit: the budget C at which N parameters are
    compute-optimal.
    """
    return (positive("N", N) / positive("n_coef", n_coef)) ** (
        1 / positive("exponent", exponent)
    )


def tokens_for_loss(
    target_loss: float, N: float, fit: ChinchillaFit = CHINCHILLA
) -> float:
    """Tokens D at which a model of N parameters reaches ``target_loss``
    (inverse of L in D).

    Raises ``ValueError`` if the target is at or below L0 + K_N/N**alpha, which
    no amount of data reaches at this model size.
    """
    target = as_float("target_loss", target_loss)
    floor = fit.L0 + fit.K_N / positive("N", N) ** fit.alpha
    if target <= floor:
        raise ValueError(
            f"target_loss must exceed {floor:.4f} "
            f"(the loss of N={N:g} with infinite data)"
        )
    return (fit.K_D / (target - floor)) ** (1 / fit.beta)


def effective_tokens(unique_tokens: float, extra_epochs: float) -> float:
    """Effective data after ``extra_epochs`` repeats when each repeat is worth
    half the one before.

    D_eff = D (1 + 1/2 + ... + 1/2**x) = 2 D (1 - 2**-(x+1)), for real x >= 0.
    """
    D = positive("unique_tokens", unique_tokens)
    x = as_float("extra_epochs", extra_epochs)
    if x < 0:
        raise ValueError(f"extra_epochs must be >= 0, got {extra_epochs!r}")
    return 2 * D * (1 - 2.0 ** -(x + 1))


def extra_epochs_needed(needed_tokens: float, unique_tokens: float) -> float:
    """Inverse of :func:`effective_tokens`: x = log2(1 / (1 - D'/(2D))) - 1.

    Returns 0 when one pass over the unique data suffices. Raises
    ``ValueError`` when D' >= 2D: under the halving assumption repeating can
    never supply that much data.
    """
    need = positive("needed_tokens", needed_tokens)
    D = positive("unique_tokens", unique_tokens)
    if need <= D:
        return 0.0
    if need >= 2 * D:
        raise ValueError(
            f"needed_tokens must be < 2 * unique_tokens = {2 * D:g}; "
            f"repetition cannot reach {need:g}"
        )
    return math.log2(1 / (1 - need / (2 * D))) - 1


def loss_with_repeats(
    N,
    C: float,
    unique_tokens: float,
    fit: ChinchillaFit = CHINCHILLA,
    c0: float = 6.0,
):
    """Loss when ``C`` FLOP train ``N`` parameters on ``unique_tokens`` tokens,
    repeats halving.

    The run processes C / (c0 N) tokens; past one epoch the extra passes count
    through :func:`effective_tokens`. ``N`` may be an array. Section genai-e3.
    """
    N_ = positive_array("N", N)
    D = positive("unique_tokens", unique_tokens)
    processed = positive("C", C) / (positive("c0", c0) * N_)
    effective = np.where(
        processed <= D, processed, 2 * D * (1 - 2.0 ** -(processed / D))
    )
    out = chinchilla_loss(N_, effective, fit)
    return float(out) if np.ndim(out) == 0 else out


def single_epoch_params(
    C: float, unique_tokens: float, c0: float = 6.0
) -> float:
    """The model size that, trained with ``C`` FLOP, reads the unique data
    exactly once.
    """
    return positive("C", C) / (
        positive("c0", c0) * positive("unique_tokens", unique_tokens)
    )


def marginal_ratio(
    N: float, D: float, fit: ChinchillaFit = CHINCHILLA
) -> float:
    """alpha K_N N^-alpha / (beta K_D D^-beta): the balance condition of
    hw11-q5b as a ratio.

    It is 1 at the compute-optimal split; above 1 more parameters would pay,
    below 1 more data. With repeats that halve in value, the single-epoch size
    is the loss minimum exactly when this ratio, evaluated there, lies between
    ln 2 and 1 (section genai-e3).
    """
    size = fit.alpha * fit.K_N * positive("N", N) ** -fit.alpha
    return size / (fit.beta * fit.K_D * positive("D", D) ** -fit.beta)


def single_epoch_window(
    unique_tokens: float, fit: ChinchillaFit = CHINCHILLA, c0: float = 6.0
) -> tuple[float, float]:
    """The budgets ``(C_lo, C_hi)`` (FLOP) between which, with repeats that
    halve in value, the compute-optimal model reads ``unique_tokens`` exactly
    once.

    At C the single-epoch size is N1 = C / (c0 D) and the ratio of
    :func:`marginal_ratio` there is rho = alpha K_N N1^-alpha / (beta K_D
    D^-beta), which falls as C grows. The window is ln 2 < rho < 1: C_lo
    solves rho = 1 (below it fresh data is to spare and the optimum reads
    less than one epoch), C_hi solves rho = ln 2 (above it a repeat is worth
    its compute and the optimum reads the data more than once). Section
    genai-e3.
    """
    D = positive("unique_tokens", unique_tokens)
    c0 = positive("c0", c0)
    data_margin = fit.beta * fit.K_D * D**-fit.beta

    def budget(rho: float) -> float:
        n1 = (fit.alpha * fit.K_N / (rho * data_margin)) ** (1 / fit.alpha)
        return c0 * D * n1

    return budget(1.0), budget(math.log(2))


def data_constrained_optimum(
    C,
    unique_tokens: float,
    fit: ChinchillaFit = CHINCHILLA,
    c0: float = 6.0,
):
    """The model size that minimises :func:`loss_with_repeats` at budget(s)
    ``C`` FLOP with ``unique_tokens`` unique tokens whose repeats halve in
    value, and the passes over the unique data it makes.

    Returns ``(N_opt, passes)``, floats for a scalar ``C``, arrays for an
    array. The loss is minimised over log N (bounded scalar search, relative
    tolerance about 1e-9) between a hundredth and a hundred times the
    single-epoch size, which holds the optimum for any fit with
    alpha, beta < 1. Section genai-e3.
    """
    from scipy.optimize import minimize_scalar

    C_ = positive_array("C", C)
    D = positive("unique_tokens", unique_tokens)
    c0 = positive("c0", c0)
    n_opt = np.empty(C_.shape)
    for i, budget in np.ndenumerate(C_):
        n1 = float(budget) / (c0 * D)
        res = minimize_scalar(
            lambda t: loss_with_repeats(math.exp(t), budget, D, fit, c0),
            bounds=(
                math.log(n1) - math.log(100),
                math.log(n1) + math.log(100),
            ),
            method="bounded",
            options={"xatol": 1e-9},
        )
        n_opt[i] = math.exp(res.x)
    passes = C_ / (c0 * n_opt * D)
    if C_.ndim == 0:
        return float(n_opt), float(passes)
    return n_opt, passes


def plot_budget_sweep(C, n_best, passes, n_free, unique_tokens, window):
    """Two panels against the budget ``C`` (FLOP): the best model size with
    ``unique_tokens`` unique tokens whose repeats halve (``n_best``), beside
    the single-epoch size C / (6 D) and the unconstrained optimum
    ``n_free``; under it the ``passes`` over the unique data the best run makes.
    ``window`` = (C_lo, C_hi) from :func:`single_epoch_window` is shaded.
    Returns the figure. Section genai-e3.
    """
    from matplotlib import pyplot as plt

    from llmbook.book.plotting import use_style

    use_style()
    # stacked at the book's 6.4 in: readable on a phone (issue 20)
    fig, (ax_n, ax_p) = plt.subplots(2, 1, figsize=(6.4, 7.2))
    d = positive("unique_tokens", unique_tokens)
    ax_n.loglog(C, n_best, label="best, repeats halve in value")
    ax_n.loglog(C, np.asarray(C) / (6 * d), "--", label="reads the data once")
    ax_n.loglog(C, n_free, ":", label="unlimited fresh data")
    ax_p.semilogx(C, passes)
    ax_p.axhline(1, color="grey", lw=1)
    for ax in (ax_n, ax_p):
        ax.axvspan(*window, color="C0", alpha=0.15, label="one-epoch window")
        ax.set_xlabel("training compute C (FLOP)")
    ax_n.set_ylabel("parameters N")
    ax_p.set_ylabel("passes over the unique data")
    ax_n.set_title("Best model size")
    ax_p.set_title("Passes the best run makes")
    ax_n.legend(fontsize=9)
    fig.tight_layout()
    return fig


def single_epoch_regime(
    C: float,
    unique_tokens: float,
    fit: ChinchillaFit = CHINCHILLA,
    c0: float = 6.0,
) -> str:
    """Where budget ``C`` lies against :func:`single_epoch_window`:
    ``"below"`` (the best run reads under one epoch), ``"once"`` (exactly
    one) or ``"above"`` (it repeats the data). Section genai-e3.
    """
    c_lo, c_hi = single_epoch_window(unique_tokens, fit, c0)
    c = positive("C", C)
    return "below" if c < c_lo else "once" if c <= c_hi else "above"


# Short headers of the CME 295 Chinchilla table as the page shows it
_CHINCHILLA_SHORT = {
    "C listed": "C",
    "Gopher units listed": "Gopher",
    "6ND / listed - 1": "6ND/C-1",
    "C at 20 tokens/param": "C(20N)",
    "Gopher units recomputed": "Gopher (ours)",
}
_CHINCHILLA_FORMATS = {
    "N": "{:.3g}",
    "C": "{:.3g}",
    "D": "{:.3g}",
    "6ND": "{:.3g}",
    "6ND/C-1": "{:+.1%}",
    "D / N": "{:.1f}",
    "C(20N)": "{:.3g}",
    "Gopher": "{:.4g}",
    "Gopher (ours)": "{:.4g}",
}


def style_chinchilla_table(table):
    """The CME 295 Chinchilla table ready to display: ``table`` (a DataFrame
    with the columns ``N``, ``C listed``, ``Gopher units listed``, ``D``,
    ``6ND``, ``6ND / listed - 1``, ``D / N``, ``C at 20 tokens/param``,
    ``Gopher units recomputed`` and ``flag``) with short headers, the
    ``flag`` column first, no index, tight padding and three or four
    significant figures. Returns a pandas ``Styler``; the data are not
    changed. Section lecture-training-cost (the Chinchilla table).
    """
    short = _CHINCHILLA_SHORT
    cols = ["flag", *[short.get(k, k) for k in table.columns if k != "flag"]]
    return (
        table.rename(columns=short)[cols]
        .style.hide(axis="index")
        .set_table_styles(
            [{"selector": "td, th", "props": "padding: 0 0.5em"}]
        )
        .format(_CHINCHILLA_FORMATS)
    )
