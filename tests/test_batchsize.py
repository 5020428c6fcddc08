"""Batch-size sweeps: gradients, optimisers and fits against autograd, torch.optim and closed forms."""

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit

from llmbook.core import stats
from llmbook.topics import batchsize as bs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small batched ops run fastest on one thread (thread start-up dominates them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lin():
    return bs.linear_problem(n_train=2000, n_test=500, d=6, sigma=1.0, seed=3)


@pytest.mark.parametrize("model", ["linear", "mlp"])
@pytest.mark.parametrize("runs, batch", [((3,), (3,)), ((2, 5), (2, 1))])
def test_hand_gradients_match_autograd(model, runs, batch):
    # batch (2, 1): one batch per seed, broadcast over that seed's 5 learning rates
    g = torch.Generator().manual_seed(0)
    X, Y = (
        torch.randn(*batch, 7, 4, generator=g),
        torch.randn(*batch, 7, 4, generator=g),
    )
    params = bs.init_params(model, runs, 4, 4, g)
    if model == "linear":
        params = [torch.randn(*runs, 4, 4, generator=g)]
    loss, grads = bs.loss_and_grads(model, params, X, Y)
    leaves = [p.clone().requires_grad_() for p in params]
    ref = ((bs.forward(model, leaves, X) - Y) ** 2).mean(dim=(-2, -1))
    auto = torch.autograd.grad(ref.sum(), leaves)
    assert loss.shape == runs
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, auto):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_runs_of_a_seed_share_batches_and_seeds_do_not(lin):
    out = bs.train_sweep(
        lin,
        "linear",
        [0.05, 0.05, 0.1],
        batch_size=4,
        steps=30,
        n_seeds=3,
        seed=2,
    )
    assert out.shape == (3, 3)
    np.testing.assert_array_equal(
        out[:, 0], out[:, 1]
    )  # same lr, same seed: same batches
    assert len(set(out[:, 0])) == 3  # independent seeds differ


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_single_run_sweep_equals_torch_optim_sgd(lin, model):
    p = (
        lin
        if model == "linear"
        else bs.mlp_problem(n_train=500, n_test=100, d=4, sigma=0.5, seed=1)
    )
    got = bs.train_sweep(p, model, [0.05], batch_size=16, steps=40, seed=7)[
        0, 0
    ]
    want = bs.train_one(p, model, 0.05, batch_size=16, steps=40, seed=7)
    assert got == pytest.approx(want, rel=1e-4)


def test_runs_in_a_sweep_do_not_interact(lin):
    a = bs.train_sweep(
        lin, "linear", [0.05, 0.2], batch_size=8, steps=30, n_seeds=2, seed=1
    )
    b = bs.train_sweep(
        lin, "linear", [0.05, 1e4], batch_size=8, steps=30, n_seeds=2, seed=1
    )
    np.testing.assert_array_equal(
        a[:, 0], b[:, 0]
    )  # a diverging neighbour changes nothing
    assert np.isinf(b[:, 1]).all()


def test_optimal_step_on_a_quadratic_is_analytic():
    # Full-batch GD on an isotropic quadratic with Hessian h*I: one step of lr = 1/h solves it,
    # lr = 2/h is the stability edge. With many data points and a large batch, the sweep's best lr is ~1/h.
    p = bs.linear_problem(n_train=4000, n_test=500, d=4, sigma=1e-3, seed=0)
    h = np.linalg.eigvalsh(bs.hessian_linear(p.X, 4))
    lrs = bs.lr_grid(0.05, 32, 1.2)
    loss = bs.train_sweep(p, "linear", lrs, batch_size=4000, steps=3, seed=0)[
        0
    ]
    lr_star, edge = bs.optimal_lr(lrs, loss)
    assert not edge
    assert lr_star == pytest.approx(1 / h.mean(), rel=0.15)
    assert bs.stability_limit(p.X, 4) == pytest.approx(2 / h.max())
    beyond = loss[lrs > 2.5 / h.min()]
    assert beyond.size and np.all(beyond > 10 * loss.min()), (
        "steps past the stability edge must blow up"
    )
    assert np.all(np.diff(beyond) > 0)


def test_adam_matches_torch_optim():
    torch.manual_seed(0)
    p = bs.mlp_problem(n_train=256, n_test=64, d=4, sigma=0.5, seed=2)
    lr, steps, betas, wd = 3e-2, 25, (0.5, 0.5), 1e-3
    got = bs.train_sweep(
        p,
        "mlp",
        [lr],
        batch_size=256,
        steps=steps,
        optimizer="adam",
        adam_betas=betas,
        weight_decay=wd,
        seed=5,
    )[0, 0]
    # Reference: the same initial weights and batches, torch.optim.Adam + LambdaLR.
    g = torch.Generator().manual_seed(5)
    params = [
        q.clone().requires_grad_() for q in bs.init_params("mlp", (), 4, 4, g)
    ]
    opt = torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: bs.warmup_cosine(t, steps, 10)
    )
    for _ in range(steps):
        idx = torch.randint(256, (256,), generator=g)
        loss = ((bs.forward("mlp", params, p.X[idx]) - p.Y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        want = float(
            ((bs.forward("mlp", params, p.X_test) - p.Y_test) ** 2).mean()
        )
    assert got == pytest.approx(want, rel=1e-4)


def test_warmup_cosine_shape():
    vals = [bs.warmup_cosine(t, 110, 10) for t in range(110)]
    assert (
        vals[0] == pytest.approx(0.1)
        and vals[9] == pytest.approx(1.0)
        and vals[10] == pytest.approx(1.0)
    )
    assert vals[60] == pytest.approx(0.5) and vals[-1] < 0.001
    assert np.all(np.diff(vals[10:]) <= 0)


def test_divergence_is_marked_inf(lin):
    out = bs.train_sweep(lin, "linear", [1e-2, 1e3], batch_size=32, steps=20)
    assert np.isfinite(out[0, 0]) and np.isinf(out[0, 1])


def test_optimal_lr_refines_and_flags_edges():
    lrs = bs.lr_grid(0.01, 20, 1.25)
    bowl = lambda c: (np.log(lrs) - np.log(c)) ** 2 + 1  # noqa: E731
    lr_star, edge = bs.optimal_lr(lrs, bowl(0.1234))
    assert lr_star == pytest.approx(0.1234, rel=1e-6) and edge == 0
    # vectorised over leading axes; a best point at either end is flagged, not refined
    rows = np.stack(
        [bowl(0.05), np.linspace(1, 2, 20), np.linspace(2, 1, 20), bowl(0.3)]
    )
    lr_star, edge = bs.optimal_lr(lrs, rows)
    assert edge.tolist() == [0, -1, 1, 0]
    np.testing.assert_allclose(
        lr_star, [0.05, lrs[0], lrs[-1], 0.3], rtol=1e-6
    )
    # a diverged neighbour stops the refinement: the grid point itself is returned
    assert bs.optimal_lr(
        lrs, np.r_[bowl(0.1234)[:7], np.inf, np.full(12, 5.0)]
    )[0] == pytest.approx(lrs[6])


def test_bootstrap_optima_resamples_seeds():
    lrs = bs.lr_grid(0.01, 24, 1.25)
    rng = np.random.default_rng(0)
    centres = np.exp(
        rng.normal(np.log(0.1), 0.3, size=6)
    )  # each seed's own optimum
    curves = np.stack([(np.log(lrs) - np.log(c)) ** 2 + 1 for c in centres])
    same = np.tile(curves[:1], (6, 1))
    opt = bs.bootstrap_optima(
        lrs, {4: curves, 64: same, 256: curves[:, ::-1]}, n_boot=400
    )
    assert opt["boot"].shape == (400, 3) and opt["B"].tolist() == [4, 64, 256]
    # identical seeds: every resample gives the same optimum, the interval has no width
    assert np.ptp(opt["boot"][:, 1]) == pytest.approx(0, abs=1e-12)
    # the seed-mean curve of parabolas in log(lr) has its vertex at the mean of the log-centres
    assert opt["lr_star"][0] == pytest.approx(
        np.exp(np.log(centres).mean()), rel=1e-9
    )
    lo, hi = stats.percentile_interval(opt["boot"][:, 0])
    assert (
        lo < opt["lr_star"][0] < hi
        and lo > centres.min()
        and hi < centres.max()
    )
    table = bs.optimum_table(opt)
    assert not table["censored"].any() and list(table.index) == [4, 64, 256]
    # a grid that stops short of the optimum: censored, with the side it lies on
    cut = bs.bootstrap_optima(lrs[:5], {8: curves[:, :5]}, n_boot=50)
    assert bs.censored(cut).tolist() == [True] and bs.optimum_table(cut)[
        "edge"
    ].tolist() == [1]


def test_bootstrap_counts_a_diverged_seed_against_its_lr():
    lrs = bs.lr_grid(0.01, 12, 1.5)
    bowl = (np.log(lrs) - np.log(0.1)) ** 2 + 1
    opt = bs.bootstrap_optima(
        lrs, {4: np.vstack([bowl, np.r_[bowl[:-1], np.inf]])}, n_boot=20
    )
    assert opt["diverged"].tolist() == [1] and opt["lr_star"][
        0
    ] == pytest.approx(0.1, rel=1e-6)


def test_fits_recover_known_parameters():
    B = np.array([2, 4, 16, 64, 256, 1024, 2048], dtype=float)
    lr = bs.saturating(B, 0.8, 40.0) * np.exp(
        np.random.default_rng(0).normal(0, 0.01, B.size)
    )
    fit = bs.fit_saturating(B, lr)
    assert fit["lr_max"] == pytest.approx(0.8, rel=0.03) and fit[
        "b_noise"
    ] == pytest.approx(40, rel=0.05)
    # the profile search finds scipy's least-squares optimum
    model = lambda x, a, b: a - np.log1p(np.exp(b - x))  # noqa: E731
    (a, b), _ = curve_fit(model, np.log(B), np.log(lr), p0=[0.0, 3.0])
    assert fit["lr_max"] == pytest.approx(np.exp(a), rel=1e-4)
    assert fit["b_noise"] == pytest.approx(np.exp(b), rel=1e-3)
    power = bs.fit_power_law(B, 0.01 * B**0.5)
    assert power["exponent"] == pytest.approx(0.5) and power[
        "coef"
    ] == pytest.approx(0.01)
    assert bs.fit_power_law(B, lr)["log_rms"] > fit["log_rms"]
    rows = bs.fit_power_law(B, np.stack([0.01 * B**0.5, 0.2 * B**-0.1]))
    np.testing.assert_allclose(
        rows["exponent"], [0.5, -0.1]
    ) and np.testing.assert_allclose(rows["coef"], [0.01, 0.2])


def _optima_from(B, true_lr, noise, n_boot, seed=0):
    """Bootstrap optima of synthetic seeds whose log-optima scatter by ``noise`` around true_lr."""
    lrs = bs.lr_grid(1e-4, 80, 1.25)
    rng = np.random.default_rng(seed)
    centres = np.exp(np.log(true_lr) + rng.normal(0, noise, size=(8, B.size)))
    losses = {
        b: (np.log(lrs) - np.log(centres[:, i, None])) ** 2
        for i, b in enumerate(B)
    }
    return bs.bootstrap_optima(lrs, losses, n_boot=n_boot)


def test_fit_intervals_cover_the_truth_and_call_a_tie():
    B = np.array([2, 4, 16, 64, 256, 1024, 2048], dtype=float)
    power = bs.fits_with_intervals(_optima_from(B, 0.01 * B**0.3, 0.1, 150))
    lo, hi = power.loc["power-law exponent", ["lo", "hi"]]
    assert lo < 0.3 < hi and hi - lo < 0.1
    # data from the saturating law: the saturating form fits better, resolved by the interval
    sat = bs.fits_with_intervals(
        _optima_from(B, bs.saturating(B, 0.8, 40.0), 0.05, 150)
    )
    assert sat.loc["log-RMS power - saturating", "lo"] > 0
    assert (
        sat.loc["saturating B_noise", "lo"]
        < 40
        < sat.loc["saturating B_noise", "hi"]
    )
    # data from a power law: the comparison interval straddles ~0 or favours the power law
    assert power.loc["log-RMS power - saturating", "lo"] < 0
    assert bs.with_interval(0.1612, 0.1401, 0.1799) == "0.16 [0.14, 0.18]"
    assert (
        bs.with_interval(0.00625, -0.0383, 0.0616, decimals=3)
        == "0.006 [\u22120.038, 0.062]"
    )


def test_noise_scale_grows_as_training_converges(lin):
    W0 = torch.zeros(6, 6)
    W_star = torch.linalg.lstsq(lin.X, lin.Y).solution
    early, late = (
        bs.noise_scale_linear(lin, W0),
        bs.noise_scale_linear(lin, 0.9 * W_star),
    )
    assert late["b_simple"] > early["b_simple"] > 0
    assert late["loss"] < early["loss"]


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: bs.lr_grid(0.1, 0), "n"),
        (lambda: bs.lr_grid(0.1, 5, 1.0), "factor"),
        (
            lambda: bs.train_sweep(
                bs.linear_problem(100, 10, 2), "linear", [], 8, 5
            ),
            "lrs",
        ),
        (
            lambda: bs.train_sweep(
                bs.linear_problem(100, 10, 2), "linear", [0.1], 0, 5
            ),
            "batch_size",
        ),
        (
            lambda: bs.train_sweep(
                bs.linear_problem(100, 10, 2), "linear", [0.1], -4, 5
            ),
            "batch_size",
        ),
        (
            lambda: bs.train_sweep(
                bs.linear_problem(100, 10, 2),
                "linear",
                [0.1],
                8,
                5,
                optimizer="lbfgs",
            ),
            "optimizer",
        ),
        (
            lambda: bs.train_sweep(
                bs.linear_problem(100, 10, 2), "cnn", [0.1], 8, 5
            ),
            "model",
        ),
        (lambda: bs.linear_problem(sigma=0), "sigma"),
        (lambda: bs.fit_saturating([1, 2], [0.1, 0.2]), "batch_sizes"),
        (lambda: bs.optimal_lr([0.1, 0.2], [1.0]), "losses"),
    ],
)
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


def test_quadratic_excess_loss_matches_the_recursion():
    h, m2, s = np.array([0.5, 2.0]), np.array([1.0, 3.0]), np.array([0.2, 0.7])
    lr, B, T = 0.3, 4, 7
    mean2, var = m2.copy(), np.zeros(2)
    for _ in range(T):
        mean2 = (1 - lr * h) ** 2 * mean2
        var = (1 - lr * h) ** 2 * var + lr**2 * s / B
    want = 0.5 * (h * (mean2 + var)).sum()
    assert bs.quadratic_excess_loss([lr], B, T, h, m2, s)[0] == pytest.approx(
        want, rel=1e-12
    )


def test_quadratic_theory_limits():
    h, m2, s = np.full(3, 0.25), np.ones(3), np.ones(3)
    # without noise, lr = 1/h solves an isotropic quadratic in one step
    assert bs.quadratic_excess_loss([4.0], 1e12, 1, h, m2, s)[
        0
    ] == pytest.approx(0, abs=1e-9)
    assert np.isinf(
        bs.quadratic_excess_loss([8.0, 9.0], 16, 5, h, m2, s)
    ).all()  # |1 - lr h| >= 1
    th = {"h": h, "m2": m2, "s": s}
    stars = [bs.theory_optimal_lr(th, B, 20) for B in [1, 10, 100, 1000]]
    assert np.all(np.diff(stars) > 0) and stars[-1] < 8.0


def test_linear_theory_noise_matches_per_example_gradients():
    p = bs.linear_problem(n_train=20000, n_test=10, d=3, sigma=2.0, seed=4)
    th = bs.linear_theory(p)
    W_star = torch.linalg.lstsq(p.X.double(), p.Y.double()).solution.float()
    # At W*, tr(Sigma) from per-example gradients equals sum_k s_k.
    per_example = 2 / 3 * p.X[:, :, None] * (p.X @ W_star - p.Y)[:, None, :]
    trace = float(
        ((per_example - per_example.mean(0)) ** 2).sum((1, 2)).mean()
    )
    assert trace == pytest.approx(th["s"].sum(), rel=0.05)


def test_loss_plot_and_optimum_plot_mark_censored_points():
    lrs = bs.lr_grid(0.01, 12, 1.5)
    bowl = (np.log(lrs) - np.log(0.1)) ** 2 + 1
    losses = {
        4: np.vstack([bowl, np.r_[bowl[:-1], np.inf]]),
        64: np.vstack([bowl, bowl]),
    }
    fig = bs.plot_loss_curves(lrs, losses, "t", floor=1.0)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    # two curves, the clipped means (bowl > 3 at the grid's ends), the x
    assert ax.get_xscale() == "log" and len(texts) == 4
    assert "drawn at the top" in texts[2] and "diverged" in texts[3]
    hollow = [
        line
        for line in ax.get_lines()
        if line.get_marker() == "o" and len(line.get_xdata())
    ]
    n_clipped = sum(len(line.get_xdata()) for line in hollow)
    assert n_clipped == 2 * int((bowl > 3).sum()) - 1  # last lr diverged
    fig = bs.plot_loss_curves(lrs, losses, "t", floor=1.0, ceiling=10.0)
    assert len(fig.axes[0].get_legend().get_texts()) == 3  # nothing clipped
    rising = np.vstack([np.linspace(2, 1, 12)] * 2)  # best at the grid's top
    table = bs.optimum_table(
        bs.bootstrap_optima(lrs, {**losses, 1024: rising}, n_boot=20)
    )
    assert table["censored"].tolist() == [False, False, True]
    fig, ax = bs.plot_optimum({"a": table, "b": table}, "title")
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = [x.get_text() for x in ax.get_legend().get_texts()]
    assert (
        sorted(labels)[:2] == ["a (95% interval)", "b (95% interval)"]
        and len(labels) == 4
    )
    assert all("censored" in x for x in sorted(labels)[2:])


def test_quadratic_optimum_never_passes_one_over_h_and_follows_the_log_law_at_small_steps():
    h, m2, s = 2.0, 1.0, 1.0
    th = {"h": np.array([h]), "m2": np.array([m2]), "s": np.array([s])}
    grid = np.logspace(-4, np.log10(0.999 / h), 4000)
    # Cap: past 1/h both terms grow with the step, so the optimum stays below 1/h at any batch.
    for B in [1, 1e3, 1e9, 1e15]:
        assert bs.theory_optimal_lr(th, B, 20) < 1 / h
    wide = np.logspace(-4, np.log10(1.999 / h), 4000)
    assert bs.theory_optimal_lr(th, 1e15, 20, wide) < 1 / h
    # Log law: with many steps and small steps (eta h << 1) it matches the exact minimiser.
    T = 2000
    for B in [10, 100, 1000]:
        exact = bs.theory_optimal_lr(th, B, T, grid)
        assert bs.log_law_lr(h, m2, s, B, T) == pytest.approx(exact, rel=0.02)
        assert exact * h < 0.01


def test_sharpness_matches_the_full_hessian():
    p = bs.mlp_problem(n_train=300, n_test=10, d=3, sigma=0.5, seed=1)
    g = torch.Generator().manual_seed(3)
    params = bs.init_params("mlp", (2,), 3, 3, g)
    lam = bs.sharpness("mlp", params, p.X, p.Y, iters=200)
    for r in range(2):
        flat = torch.cat([q[r].reshape(-1) for q in params])
        shapes = [q[r].shape for q in params]

        def loss(theta):
            parts, i = [], 0
            for shp in shapes:
                parts.append(theta[i : i + shp.numel()].view(shp))
                i += shp.numel()
            return ((bs.forward("mlp", parts, p.X) - p.Y) ** 2).mean()

        eig = torch.linalg.eigvalsh(
            torch.autograd.functional.hessian(loss, flat)
        )
        assert lam[r] == pytest.approx(
            float(eig[eig.abs().argmax()]), rel=1e-3
        )


def test_sharpness_of_linear_regression_is_the_stability_limit(lin):
    lam = bs.sharpness(
        "linear", [torch.zeros(1, 6, 6)], lin.X, lin.Y, iters=60
    )
    assert 2 / lam[0] == pytest.approx(bs.stability_limit(lin.X, 6), rel=1e-3)


def test_state_noise_theory_matches_a_simulation_of_sgd():
    # Monte Carlo: SGD on fresh Gaussian examples, y = x W* + sigma noise,
    # many independent runs; the mean excess loss against the recursion.
    rng = np.random.default_rng(0)
    d, sigma, lr, B, T, runs = 3, 1.5, 0.4, 2, 12, 40_000
    W_star = rng.standard_normal((d, d))
    th = {
        "c": np.ones(d),
        "m2": (W_star**2).reshape(-1),
        "sigma2": sigma**2,
        "d_out": d,
    }
    W = np.zeros((runs, d, d))
    for _ in range(T):
        X = rng.standard_normal((runs, B, d))
        Y = X @ W_star + sigma * rng.standard_normal((runs, B, d))
        W -= lr * 2 / (B * d) * X.transpose(0, 2, 1) @ (X @ W - Y)
    # excess test loss of each run, E_x |x (W - W*)|^2 / d
    sim = ((W - W_star) ** 2).sum((1, 2)) / d
    got = bs.state_noise_excess_loss([lr], B, T, th)[0]
    assert got == pytest.approx(sim.mean(), rel=0.03)
    # the additive-noise theory misses the error's own noise: too low here
    h = np.full(d * d, 2 / d)
    s = 2 * sigma**2 * h / d
    additive = bs.quadratic_excess_loss([lr], B, T, h, th["m2"], s)[0]
    assert additive < 0.9 * sim.mean()


def test_state_noise_theory_reduces_to_the_additive_one_at_the_solution():
    # Started at W* (m2 = 0) with a tiny step, the error stays small, so its
    # own noise is negligible and both theories agree.
    c = np.array([0.5, 1.0, 2.0])
    th = {"c": c, "m2": np.zeros(6), "sigma2": 4.0, "d_out": 2}
    h = np.repeat(c, 2)  # 2 c / d_out with d_out = 2
    s = 2 * 4.0 * h / 2
    want = bs.quadratic_excess_loss([1e-3], 8, 30, h, th["m2"], s)
    got = bs.state_noise_excess_loss([1e-3], 8, 30, th)
    assert got[0] == pytest.approx(want[0], rel=1e-3)
    # and with the error's noise the optimum of a small batch is lower
    p = bs.linear_problem(n_train=4000, n_test=10, d=4, sigma=2.0, seed=2)
    lin = bs.linear_theory(p)
    assert bs.theory_optimal_lr(
        lin, 2, 20, state_noise=True
    ) < bs.theory_optimal_lr(lin, 2, 20)


def test_theory_rows_and_exponent_table():
    B = np.array([2, 4, 16, 64, 256, 1024, 2048], dtype=float)
    truth = 0.01 * B**0.3
    optima = _optima_from(B, truth, 0.05, 100)
    fits = bs.fits_with_intervals(optima)
    keep = np.ones(B.size, bool)
    bs.add_theory_rows(fits, optima, truth, keep)
    rms = fits.loc["theory log-RMS"]
    want = np.sqrt(np.mean(np.log(optima["lr_star"] / truth) ** 2))
    assert rms["estimate"] == pytest.approx(want)
    assert rms["lo"] <= rms["hi"] < 0.1
    # a theory off by a factor 2 everywhere has log-RMS ln 2 at least
    worse = bs.add_theory_rows(
        bs.fits_with_intervals(optima), optima, 2 * truth, keep
    )
    assert worse.loc["theory log-RMS", "estimate"] > 0.9 * np.log(2)
    table = bs.exponent_table({"a": optima, "b": optima})
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "estimate"] == pytest.approx(
        fits.loc["power-law exponent", "estimate"]
    )
    assert table.loc["a", "censored batch sizes"] == []


def test_log_law_table_crosses_one_over_h_at_B_cross():
    th = {"h": np.array([0.1, 0.3]), "m2": np.ones(2), "s": np.ones(2)}
    table, B_cross, h = bs.log_law_table(th, [2, 64], 20)
    assert h == pytest.approx(0.2)
    assert table["log law"].to_numpy() == pytest.approx(
        bs.log_law_lr(0.2, 1.0, 1.0, np.array([2.0, 64.0]), 20)
    )
    assert bs.log_law_lr(0.2, 1.0, 1.0, B_cross, 20) == pytest.approx(5.0)
    assert (table["eta* h (exact)"] < 1).all()


def test_sweep_takes_a_step_budget_per_batch_size(lin):
    lrs = bs.lr_grid(0.05, 5, 2.0)
    losses, optima, table = bs.sweep(
        lin, "linear", lrs, [2, 8], lambda B: 16 // B, 2, n_boot=10, seed=3
    )
    assert list(table.index) == [2, 8] and optima["boot"].shape == (10, 2)
    want = bs.train_sweep(lin, "linear", lrs, 8, 2, 2, seed=3)
    np.testing.assert_array_equal(losses[8], want)


def test_plot_fits_draws_the_fitted_laws():
    import matplotlib.pyplot as plt
    import pandas as pd

    B = np.array([2, 8, 32, 128, 512])
    table = pd.DataFrame(
        {"lr*": 0.02 * B**0.4, "censored": [False] * 4 + [True]},
        index=pd.Index(B, name="batch size"),
    )
    fig, ax = plt.subplots()
    bs.plot_fits(ax, table)
    power, sat = ax.get_lines()
    assert "exponent 0.40" in power.get_label()
    x, y = power.get_data()
    np.testing.assert_allclose(y, 0.02 * x**0.4, rtol=1e-9)
    assert x.max() == pytest.approx(512)
    fig, ax = plt.subplots()
    bs.plot_fits(ax, table, power=False)
    assert len(ax.get_lines()) == 1
    plt.close("all")


def test_sharpness_scan_and_draw_plots():
    import matplotlib.pyplot as plt
    import pandas as pd

    lrs = np.array([0.1, 0.2, 0.4])
    sharp = np.array([[4.0, 5.0, 4.0], [6.0, np.nan, 5.0]])
    fig, ax = bs.plot_sharpness_scan(lrs, sharp, 0.2, [5, 4, 6], "t")
    edge = [ln for ln in ax.get_lines() if ln.get_label().startswith("edge")]
    np.testing.assert_allclose(edge[0].get_ydata(), 2 / lrs)
    med = ax.containers[0].lines[0].get_ydata()
    np.testing.assert_allclose(med, [5.0, 5.0, 4.5])
    t = pd.DataFrame(
        {"estimate": [0.1, 0.2], "lo": [0.0, 0.1], "hi": [0.2, 0.3]},
        index=[0, 1],
    )
    fig, ax = bs.plot_exponents_by_draw({"SGD": t, "Adam": t}, "t")
    assert len(ax.containers) == 2
    x = ax.containers[0].lines[0].get_xdata()
    np.testing.assert_allclose(x, [-0.05, 0.95])
    plt.close("all")


def test_draw_row_is_the_page_summary_of_one_draw(lin):
    B = np.array([2, 4, 16, 64, 256, 1024, 2048], dtype=float)
    truth = 0.01 * B**0.3
    optima = _optima_from(B, truth, 0.05, 100)
    row = bs.draw_row(lin, optima, 20)
    fits = bs.fits_with_intervals(optima)
    exp = fits.loc["power-law exponent"]
    assert row["exponent"] == pytest.approx(exp["estimate"])
    assert row["exponent lo"] <= row["exponent"] <= row["exponent hi"]
    theory = bs.linear_theory(lin)
    pred = [bs.theory_optimal_lr(theory, b, 20, state_noise=True) for b in B]
    ratio = optima["lr_star"] / np.array(pred)
    assert row["measured / theory, min"] == pytest.approx(ratio.min())
    assert row["measured / theory, max"] == pytest.approx(ratio.max())
    diff = fits.loc["log-RMS power - saturating"]
    want = stats.compare((diff["lo"], diff["hi"]), (0.0, 0.0))
    assert row["which fits better"] == bs.DRAW_WORDS[want]
    assert row["censored"] == int(bs.censored(optima).sum())


def test_verdict_counts():
    tie, sat = bs.DRAW_WORDS["within noise"], bs.DRAW_WORDS["better"]
    assert bs.verdict_counts([tie, tie, tie]) == f"{tie} in all 3 draws"
    assert bs.verdict_counts([sat]) == f"{sat} in 1 draw"
    assert (
        bs.verdict_counts([sat, tie, sat])
        == f"{sat} in 2 and {tie} in 1 of 3 draws"
    )
    three = bs.verdict_counts(["x", "y", "z", "x"])
    assert three == "x in 2, y in 1 and z in 1 of 4 draws"
    with pytest.raises(ValueError):
        bs.verdict_counts([])
