"""Batch-size sweeps: gradients, optimisers and fits against autograd, torch.optim and closed forms."""

import numpy as np
import pytest
import torch

from llmbook import batchsize as bs


@pytest.fixture(scope="module")
def lin():
    return bs.linear_problem(n_train=2000, n_test=500, d=6, sigma=1.0, seed=3)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_hand_gradients_match_autograd(model):
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(3, 7, 4, generator=g), torch.randn(3, 7, 4, generator=g)
    params = bs.init_params(model, 3, 4, 4, g)
    if model == "linear":
        params = [torch.randn(3, 4, 4, generator=g)]
    loss, grads = bs.loss_and_grads(model, params, X, Y)
    leaves = [p.clone().requires_grad_() for p in params]
    ref = ((bs.forward(model, leaves, X) - Y) ** 2).mean(dim=(1, 2))
    auto = torch.autograd.grad(ref.sum(), leaves)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, auto):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_single_run_sweep_equals_torch_optim_sgd(lin, model):
    p = lin if model == "linear" else bs.mlp_problem(n_train=500, n_test=100, d=4, sigma=0.5, seed=1)
    got = bs.train_sweep(p, model, [0.05], batch_size=16, steps=40, seed=7)[0, 0]
    want = bs.train_one(p, model, 0.05, batch_size=16, steps=40, seed=7)
    assert got == pytest.approx(want, rel=1e-4)


def test_runs_in_a_sweep_do_not_interact(lin):
    a = bs.train_sweep(lin, "linear", [0.05, 0.2], batch_size=8, steps=30, n_seeds=2, seed=1)
    b = bs.train_sweep(lin, "linear", [0.05, 1e4], batch_size=8, steps=30, n_seeds=2, seed=1)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])   # a diverging neighbour changes nothing
    assert np.isinf(b[:, 1]).all()


def test_optimal_step_on_a_quadratic_is_analytic():
    # Full-batch GD on an isotropic quadratic with Hessian h*I: one step of lr = 1/h solves it,
    # lr = 2/h is the stability edge. With many data points and a large batch, the sweep's best lr is ~1/h.
    p = bs.linear_problem(n_train=4000, n_test=500, d=4, sigma=1e-3, seed=0)
    h = np.linalg.eigvalsh(bs.hessian_linear(p.X, 4))
    lrs = bs.lr_grid(0.05, 32, 1.2)
    loss = bs.train_sweep(p, "linear", lrs, batch_size=4000, steps=3, seed=0)[0]
    lr_star, edge = bs.optimal_lr(lrs, loss)
    assert not edge
    assert lr_star == pytest.approx(1 / h.mean(), rel=0.15)
    assert bs.stability_limit(p.X, 4) == pytest.approx(2 / h.max())
    beyond = loss[lrs > 2.5 / h.min()]
    assert beyond.size and np.all(beyond > 10 * loss.min()), "steps past the stability edge must blow up"
    assert np.all(np.diff(beyond) > 0)


def test_adam_matches_torch_optim():
    torch.manual_seed(0)
    p = bs.mlp_problem(n_train=256, n_test=64, d=4, sigma=0.5, seed=2)
    lr, steps, betas, wd = 3e-2, 25, (0.5, 0.5), 1e-3
    got = bs.train_sweep(p, "mlp", [lr], batch_size=256, steps=steps, optimizer="adam", adam_betas=betas,
                         weight_decay=wd, seed=5)[0, 0]
    # Reference: the same initial weights and batches, torch.optim.Adam + LambdaLR.
    g = torch.Generator().manual_seed(5)
    params = [q.clone().requires_grad_() for q in bs.init_params("mlp", 1, 4, 4, g)]
    opt = torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: bs.warmup_cosine(t, steps, 10))
    for _ in range(steps):
        idx = torch.randint(256, (1, 256), generator=g)
        loss = ((bs.forward("mlp", params, p.X[idx]) - p.Y[idx]) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    with torch.no_grad():
        want = float(((bs.forward("mlp", params, p.X_test) - p.Y_test) ** 2).mean())
    assert got == pytest.approx(want, rel=1e-4)


def test_warmup_cosine_shape():
    vals = [bs.warmup_cosine(t, 110, 10) for t in range(110)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0) and vals[10] == pytest.approx(1.0)
    assert vals[60] == pytest.approx(0.5) and vals[-1] < 0.001
    assert np.all(np.diff(vals[10:]) <= 0)


def test_divergence_is_marked_inf(lin):
    out = bs.train_sweep(lin, "linear", [1e-2, 1e3], batch_size=32, steps=20)
    assert np.isfinite(out[0, 0]) and np.isinf(out[0, 1])


def test_optimal_lr_refines_and_flags_edges():
    lrs = bs.lr_grid(0.01, 20, 1.25)
    losses = (np.log(lrs) - np.log(0.1234)) ** 2 + 1
    lr_star, edge = bs.optimal_lr(lrs, losses)
    assert lr_star == pytest.approx(0.1234, rel=1e-6) and not edge
    assert bs.optimal_lr(lrs, np.linspace(1, 2, 20))[1] is True
    assert bs.optimal_lr(lrs, np.r_[np.full(19, np.inf), 1.0]) == (pytest.approx(lrs[-1]), True)


def test_fits_recover_known_parameters():
    B = np.array([2, 4, 16, 64, 256, 1024, 2048], dtype=float)
    lr = bs.saturating(B, 0.8, 40.0) * np.exp(np.random.default_rng(0).normal(0, 0.01, B.size))
    fit = bs.fit_saturating(B, lr)
    assert fit["lr_max"] == pytest.approx(0.8, rel=0.03) and fit["b_noise"] == pytest.approx(40, rel=0.05)
    power = bs.fit_power_law(B, 0.01 * B**0.5)
    assert power["exponent"] == pytest.approx(0.5) and power["coef"] == pytest.approx(0.01)
    assert bs.fit_power_law(B, lr)["log_rms"] > fit["log_rms"]


def test_noise_scale_grows_as_training_converges(lin):
    W0 = torch.zeros(6, 6)
    W_star = torch.linalg.lstsq(lin.X, lin.Y).solution
    early, late = bs.noise_scale_linear(lin, W0), bs.noise_scale_linear(lin, 0.9 * W_star)
    assert late["b_simple"] > early["b_simple"] > 0
    assert late["loss"] < early["loss"]


@pytest.mark.parametrize("call, arg", [
    (lambda: bs.lr_grid(0.1, 0), "n"),
    (lambda: bs.lr_grid(0.1, 5, 1.0), "factor"),
    (lambda: bs.train_sweep(bs.linear_problem(100, 10, 2), "linear", [], 8, 5), "lrs"),
    (lambda: bs.train_sweep(bs.linear_problem(100, 10, 2), "linear", [0.1], 0, 5), "batch_size"),
    (lambda: bs.train_sweep(bs.linear_problem(100, 10, 2), "linear", [0.1], -4, 5), "batch_size"),
    (lambda: bs.train_sweep(bs.linear_problem(100, 10, 2), "linear", [0.1], 8, 5, optimizer="lbfgs"), "optimizer"),
    (lambda: bs.train_sweep(bs.linear_problem(100, 10, 2), "cnn", [0.1], 8, 5), "model"),
    (lambda: bs.linear_problem(sigma=0), "sigma"),
    (lambda: bs.fit_saturating([1, 2], [0.1, 0.2]), "batch_sizes"),
    (lambda: bs.optimal_lr([0.1, 0.2], [1.0]), "losses"),
])
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
    assert bs.quadratic_excess_loss([lr], B, T, h, m2, s)[0] == pytest.approx(want, rel=1e-12)


def test_quadratic_theory_limits():
    h, m2, s = np.full(3, 0.25), np.ones(3), np.ones(3)
    # without noise, lr = 1/h solves an isotropic quadratic in one step
    assert bs.quadratic_excess_loss([4.0], 1e12, 1, h, m2, s)[0] == pytest.approx(0, abs=1e-9)
    assert np.isinf(bs.quadratic_excess_loss([8.0, 9.0], 16, 5, h, m2, s)).all()   # |1 - lr h| >= 1
    th = {"h": h, "m2": m2, "s": s}
    stars = [bs.theory_optimal_lr(th, B, 20) for B in [1, 10, 100, 1000]]
    assert np.all(np.diff(stars) > 0) and stars[-1] < 8.0


def test_linear_theory_noise_matches_per_example_gradients():
    p = bs.linear_problem(n_train=20000, n_test=10, d=3, sigma=2.0, seed=4)
    th = bs.linear_theory(p)
    W_star = torch.linalg.lstsq(p.X.double(), p.Y.double()).solution.float()
    # At W*, tr(Sigma) from per-example gradients equals sum_k s_k.
    per_example = 2 / 3 * p.X[:, :, None] * (p.X @ W_star - p.Y)[:, None, :]
    trace = float(((per_example - per_example.mean(0)) ** 2).sum((1, 2)).mean())
    assert trace == pytest.approx(th["s"].sum(), rel=0.05)


def test_optimum_table_and_loss_plot():
    lrs = bs.lr_grid(0.01, 12, 1.5)
    bowl = (np.log(lrs) - np.log(0.1)) ** 2 + 1
    losses = {4: np.vstack([bowl, np.r_[bowl[:-1], np.inf]]), 64: np.vstack([bowl, bowl])}
    table = bs.optimum_table(lrs, losses)
    assert list(table.index) == [4, 64]
    assert table.loc[4, "lr*"] == pytest.approx(0.1, rel=1e-6) and table.loc[4, "diverged runs"] == 1
    assert table.loc[64, "at grid edge"] == 0 and table.loc[64, "log std"] == pytest.approx(0, abs=1e-12)
    fig = bs.plot_loss_curves(lrs, losses, "t", floor=1.0)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_legend().get_texts()) == 2


def test_plot_optimum_draws_one_series_per_table():
    import pandas as pd

    t = pd.DataFrame({"lr*": [0.1, 0.2, 0.3], "log std": [0.1, 0.2, float("nan")]}, index=[2, 16, 128])
    fig, ax = bs.plot_optimum({"a": t, "b": t * 2}, "title")
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert [x.get_text() for x in ax.get_legend().get_texts()] == ["a", "b"]
