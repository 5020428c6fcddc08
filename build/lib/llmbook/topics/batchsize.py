"""Learning rate against batch size: vectorised sweeps, optima with bootstrap
intervals, fits, the quadratic theory and the sharpness of the loss.

Every learning rate and seed of a sweep trains at once: weights carry two
leading "run" axes (S seeds, L learning rates) and each step is one batched
tensor computation, not a Python loop over runs. The L runs of one seed share
their initial weights and their mini-batches (common random numbers), so
differences between learning rates are not hidden by different draws; seeds are
independent. Derived in the chapter "Scaling laws of batch size" (hw11-q4).
Loss is nn.MSELoss's: the mean over samples *and* output dimensions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from llmbook.core.stats import percentile_interval
from llmbook.core.validate import positive, positive_array, positive_int


def lr_grid(lr_min: float, n: int = 32, factor: float = 1.25) -> np.ndarray:
    """Geometric grid ``lr_min * factor**k`` for k = 0 .. n-1."""
    lr_min, n = positive("lr_min", lr_min), positive_int("n", n)
    factor = positive("factor", factor)
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    return lr_min * factor ** np.arange(n)


@dataclass
class Problem:
    """A regression data set: train/test inputs and targets (rows are
    examples).
    """

    X: torch.Tensor
    Y: torch.Tensor
    X_test: torch.Tensor
    Y_test: torch.Tensor
    noise_sigma: float


def _problem(
    n_train, n_test, d, sigma, seed, teacher, n_weights: int
) -> Problem:
    """Draw ``n_weights`` d x d teacher matrices, then X, then the label
    noise.
    """
    n_train, n_test = (
        positive_int("n_train", n_train),
        positive_int("n_test", n_test),
    )
    d, sigma = positive_int("d", d), positive("sigma", sigma)
    g = torch.Generator().manual_seed(int(seed))
    weights = [torch.randn(d, d, generator=g) for _ in range(n_weights)]
    X = torch.randn(n_train + n_test, d, generator=g)
    Y = teacher(X, *weights) + sigma * torch.randn(
        n_train + n_test, d, generator=g
    )
    return Problem(X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], sigma)


def linear_problem(
    n_train: int = 10_000,
    n_test: int = 1_000,
    d: int = 16,
    sigma: float = 5.0,
    seed: int = 0,
) -> Problem:
    """Y = X W* + sigma * noise with X, W* standard normal (d x d): the
    homework's set-up.
    """
    return _problem(n_train, n_test, d, sigma, seed, lambda X, W: X @ W, 1)


def mlp_problem(
    n_train: int = 10_000,
    n_test: int = 1_000,
    d: int = 4,
    sigma: float = 2.0,
    seed: int = 0,
) -> Problem:
    """Teacher relu(X W1) W2 plus sigma * noise, X, W1, W2 standard normal
    (d x d).
    """
    return _problem(
        n_train,
        n_test,
        d,
        sigma,
        seed,
        lambda X, W1, W2: torch.relu(X @ W1) @ W2,
        2,
    )


def init_params(
    model: str,
    runs: tuple[int, ...],
    d_in: int,
    d_out: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """Initial parameters with leading shape ``runs``: zeros for "linear" (W:
    d_in x d_out); nn.Linear's uniform(+-1/sqrt(fan_in)) for "mlp" (W1, b1, W2,
    b2; hidden width d_in).
    """
    runs = tuple(runs)
    if model == "linear":
        return [torch.zeros(*runs, d_in, d_out)]
    if model == "mlp":
        bound = 1 / math.sqrt(d_in)  # both layers have fan_in = d_in
        shapes = [(d_in, d_in), (1, d_in), (d_in, d_out), (1, d_out)]
        return [
            (torch.rand(*runs, *s, generator=generator) * 2 - 1) * bound
            for s in shapes
        ]
    raise ValueError(f"model must be 'linear' or 'mlp', got {model!r}")


def forward(
    model: str, params: list[torch.Tensor], X: torch.Tensor
) -> torch.Tensor:
    """Batched forward pass: X (..., B, d_in) broadcast against params (*runs,
    ...) ->
    (*runs, B, d_out). A plain (B, d_in) X is shared by every run."""
    if model == "linear":
        return X @ params[0]
    W1, b1, W2, b2 = params
    return torch.relu(X @ W1 + b1) @ W2 + b2


def loss_and_grads(
    model: str, params: list[torch.Tensor], X: torch.Tensor, Y: torch.Tensor
):
    """Per-run MSE (*runs,) and its gradients for every parameter, by hand (no
    autograd).

    X: (..., B, d_in), Y: (..., B, d_out), broadcast against the runs' leading
        axes (a seed's
    batch has shape (S, 1, B, d) and serves its L learning rates). The loss is
    the mean over the B examples and d_out outputs.
    """
    B, d_out = Y.shape[-2:]
    if model == "linear":
        # Through the batch's second moments, computed once per batch, not once
        # per run.
        (W,) = params
        d_in = X.shape[-1]
        Z = torch.cat([X, Y], dim=-1)
        M = Z.transpose(-1, -2) @ Z / B  # (..., d_in+d_out, same)
        Mxx, Mxy = M[..., :d_in, :d_in], M[..., :d_in, d_in:]
        yy = M[..., d_in:, d_in:].diagonal(dim1=-2, dim2=-1).sum(-1)
        MxxW = Mxx @ W
        loss = (
            (W * MxxW).sum((-2, -1)) - 2 * (W * Mxy).sum((-2, -1)) + yy
        ) / d_out
        return loss, [2 * (MxxW - Mxy) / d_out]
    W1, b1, W2, b2 = params
    h = X @ W1 + b1
    a = torch.relu(h)
    err = a @ W2 + b2 - Y
    g_out = 2 * err / (B * d_out)  # (*runs, B, d_out)
    g_h = (g_out @ W2.transpose(-1, -2)) * (h > 0)  # (*runs, B, hidden)
    grads = [
        X.transpose(-1, -2) @ g_h,
        g_h.sum(-2, keepdim=True),
        a.transpose(-1, -2) @ g_out,
        g_out.sum(-2, keepdim=True),
    ]
    return (err**2).mean(dim=(-2, -1)), grads


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int = 10
) -> float:
    """Multiplier of the peak lr: linear warm-up over ``warmup_steps``, then
    cosine decay to 0.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * progress))


def sgd_update(params, grads, lr: torch.Tensor) -> None:
    """One SGD step of every run, in place: p <- p - lr * g; lr has the
    runs' shape.
    """
    for p, g in zip(params, grads):
        p -= lr[..., None, None] * g


def adam_update(
    params,
    grads,
    state: dict,
    lr: torch.Tensor,
    t: int,
    betas=(0.9, 0.999),
    weight_decay: float = 0.0,
    eps: float = 1e-8,
) -> None:
    """Step ``t`` (from 1) of torch.optim.Adam with L2 ``weight_decay``, for
    every run, in place. ``state`` holds the moment lists "m" and "v" (shaped
    like params); lr has the runs' shape.
    """
    b1, b2 = betas
    for p, g, m, v in zip(params, grads, state["m"], state["v"]):
        g = g + weight_decay * p
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p -= lr[..., None, None] * m_hat / (v_hat.sqrt() + eps)


def _check_sweep(lrs, batch_size, steps, n_seeds, optimizer):
    lrs = positive_array("lrs", lrs)
    if lrs.ndim != 1:
        raise ValueError("lrs must be a one-dimensional grid")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(
            f"optimizer must be 'sgd' or 'adam', got {optimizer!r}"
        )
    ints = [
        positive_int(k, v)
        for k, v in (
            ("batch_size", batch_size),
            ("steps", steps),
            ("n_seeds", n_seeds),
        )
    ]
    return torch.tensor(lrs, dtype=torch.float32), *ints


def train_runs(
    problem: Problem,
    model: str,
    lrs,
    batch_size: int,
    steps: int,
    n_seeds: int = 1,
    optimizer: str = "sgd",
    adam_betas=(0.9, 0.999),
    weight_decay: float = 0.0,
    warmup_steps: int = 10,
    seed: int = 0,
    max_loss: float = 1e6,
):
    """Train S = ``n_seeds`` x L = len(lrs) runs at once; return (params,
    alive), (S, L, ...).

    Each step draws one batch per seed, with replacement, shared by that seed's
    L runs. "sgd" keeps the lr constant; "adam" is torch.optim.Adam with
    :func:`warmup_cosine`. A run whose batch loss passes ``max_loss`` (or is
    not finite) is frozen: alive = False.
    """
    lr, B, steps, S = _check_sweep(lrs, batch_size, steps, n_seeds, optimizer)
    g = torch.Generator().manual_seed(int(seed))
    n, d_in, d_out = problem.X.shape[0], problem.X.shape[1], problem.Y.shape[1]
    params = [
        p.repeat(1, lr.numel(), 1, 1)
        for p in init_params(model, (S, 1), d_in, d_out, g)
    ]
    state = {
        "m": [torch.zeros_like(p) for p in params],
        "v": [torch.zeros_like(p) for p in params],
    }
    alive = torch.ones(S, lr.numel(), dtype=torch.bool)
    for t in range(steps):
        idx = torch.randint(n, (S, 1, B), generator=g)  # one batch per seed
        loss, grads = loss_and_grads(
            model, params, problem.X[idx], problem.Y[idx]
        )
        alive &= torch.isfinite(loss) & (loss < max_loss)
        grads = [torch.where(alive[..., None, None], gr, 0.0) for gr in grads]
        if optimizer == "sgd":
            sgd_update(params, grads, lr * alive)
        else:
            peak = lr * alive * warmup_cosine(t, steps, warmup_steps)
            adam_update(
                params, grads, state, peak, t + 1, adam_betas, weight_decay
            )
    return params, alive


def final_test_mse(
    problem: Problem, model: str, params, alive=None, max_loss: float = 1e6
) -> np.ndarray:
    """Test MSE of every run (shape of the runs); ``inf`` for frozen or
    diverged runs.
    """
    with torch.no_grad():
        mse = (
            (forward(model, params, problem.X_test) - problem.Y_test) ** 2
        ).mean(dim=(-2, -1))
    ok = torch.isfinite(mse) & (mse < max_loss)
    ok = ok if alive is None else ok & alive
    return torch.where(ok, mse, torch.full_like(mse, math.inf)).numpy()


def train_sweep(
    problem: Problem,
    model: str,
    lrs,
    batch_size: int,
    steps: int,
    n_seeds: int = 1,
    **options,
) -> np.ndarray:
    """Final test MSE of every (seed, lr) run of :func:`train_runs`, shape
    (n_seeds, len(lrs)).
    """
    params, alive = train_runs(
        problem, model, lrs, batch_size, steps, n_seeds, **options
    )
    return final_test_mse(problem, model, params, alive)


def train_one(
    problem: Problem,
    model: str,
    lr: float,
    batch_size: int,
    steps: int,
    seed: int = 0,
) -> float:
    """Reference: one SGD run with an ordinary torch.optim.SGD loop (for
    benchmarks and tests).
    """
    g = torch.Generator().manual_seed(int(seed))
    d_in, d_out = problem.X.shape[1], problem.Y.shape[1]
    params = [
        p.clone().requires_grad_()
        for p in init_params(model, (), d_in, d_out, g)
    ]
    opt = torch.optim.SGD(params, lr=positive("lr", lr))
    for _ in range(positive_int("steps", steps)):
        idx = torch.randint(problem.X.shape[0], (batch_size,), generator=g)
        loss = (
            (forward(model, params, problem.X[idx]) - problem.Y[idx]) ** 2
        ).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(final_test_mse(problem, model, [p.detach() for p in params]))


def benchmark(
    problem: Problem, model: str, lrs, batch_size: int, steps: int
) -> dict[str, float]:
    """Time the same sweep vectorised (one batched run) and as a Python loop
    over runs.
    """
    lrs = positive_array("lrs", lrs)
    start = time.perf_counter()
    train_sweep(problem, model, lrs, batch_size, steps)
    vectorised = time.perf_counter() - start
    start = time.perf_counter()
    for lr in lrs:
        train_one(problem, model, float(lr), batch_size, steps)
    looped = time.perf_counter() - start
    return {
        "runs": float(lrs.size),
        "vectorised_s": vectorised,
        "loop_s": looped,
        "speedup": looped / vectorised,
    }


# --- Optima, bootstrap intervals and fits
# -------------------------------------------------------


def optimal_lr(lrs, losses) -> tuple[np.ndarray, np.ndarray]:
    """Best lr of each loss curve (the last axis of ``losses``), refined by the
    vertex of the parabola in log(lr) through the best grid point and its two
    neighbours.

    Returns ``(lr_star, edge)`` with the shape of ``losses[..., 0]``: ``edge``
    is -1 (+1) where the best point is the grid's first (last), a censored
    optimum that may lie beyond the grid, else 0. Diverged runs (inf) count as
    infinitely bad.
    """
    lrs, losses = positive_array("lrs", lrs), np.asarray(losses, dtype=float)
    if lrs.ndim != 1 or losses.shape[-1:] != lrs.shape:
        raise ValueError(
            "losses must end in the shape of lrs "
            f"{lrs.shape}, got {losses.shape}"
        )
    y = np.where(np.isfinite(losses), losses, np.inf)
    if np.any(np.all(np.isinf(y), axis=-1)):
        raise ValueError("losses: every run of a curve diverged")
    x, n = np.log(lrs), lrs.size
    k = np.argmin(y, axis=-1)
    km, kp = np.maximum(k - 1, 0), np.minimum(k + 1, n - 1)

    def pick(j):
        return np.take_along_axis(y, j[..., None], -1)[..., 0]

    y0, y1, y2, x0, x1, x2 = pick(km), pick(k), pick(kp), x[km], x[k], x[kp]
    with np.errstate(invalid="ignore", divide="ignore"):
        num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        shift = np.where(
            (k > 0) & (k < n - 1) & np.isfinite(y0 + y2) & (den != 0),
            -0.5 * num / den,
            0.0,
        )
    edge = np.where(k == 0, -1, np.where(k == n - 1, 1, 0))
    return np.exp(np.clip(x1 + shift, x0, x2)), edge


def bootstrap_optima(
    lrs, losses: dict, n_boot: int = 1000, seed: int = 0
) -> dict:
    """lr* of the seed-mean loss curve for every batch size, and of ``n_boot``
    resamples of the seeds (drawn with replacement; the same seeds for every
    batch size, which share them).

    ``losses[B]``: (seeds, lrs) test losses, inf where a run diverged (then the
        mean is inf).
    Returns arrays "B", "lr_star", "edge" (n_B,), "boot", "boot_edge" (n_boot,
    n_B), "diverged".
    """
    L = np.stack(
        [np.atleast_2d(v) for v in losses.values()]
    )  # (n_B, S, n_lrs)
    idx = np.random.default_rng(seed).integers(
        L.shape[1], size=(positive_int("n_boot", n_boot), L.shape[1])
    )
    lr_star, edge = optimal_lr(lrs, L.mean(1))
    boot, boot_edge = optimal_lr(lrs, L[:, idx].mean(2))  # (n_B, n_boot)
    return {
        "B": np.array(list(losses), dtype=float),
        "lr_star": lr_star,
        "edge": edge,
        "boot": boot.T,
        "boot_edge": boot_edge.T,
        "diverged": np.isinf(L).sum((1, 2)),
    }


def censored(optima: dict, max_share: float = 0.05) -> np.ndarray:
    """Batch sizes whose optimum is at the grid's edge, in the data or in more
    than ``max_share`` of the bootstrap resamples: their lr* is only a bound,
    left out of fits.
    """
    return (optima["edge"] != 0) | (
        (optima["boot_edge"] != 0).mean(0) > max_share
    )


def optimum_table(optima: dict, level: float = 0.95):
    """Per batch size: lr*, its bootstrap interval, whether it is censored,
    diverged runs.
    """
    import pandas as pd

    lo, hi = np.array(
        [percentile_interval(col, level) for col in optima["boot"].T]
    ).T
    # which side a censored optimum may lie on: the data's edge, else the
    # resamples' usual one
    side = np.where(
        optima["edge"] != 0,
        optima["edge"],
        np.sign(optima["boot_edge"].mean(0)),
    )
    return pd.DataFrame(
        {
            "lr*": optima["lr_star"],
            "lo": lo,
            "hi": hi,
            "censored": censored(optima),
            "edge": side.astype(int),
            "diverged runs": optima["diverged"],
        },
        index=pd.Index(optima["B"].astype(int), name="batch size"),
    )


def saturating(B, lr_max: float, b_noise: float):
    """lr*(B) = lr_max / (1 + B_noise / B) (McCandlish et al. 2018)."""
    return lr_max / (1 + b_noise / np.asarray(B, dtype=float))


def _log_batch_lr(batch_sizes, lr_star, min_points: int):
    """log B (n,) and log lr* (..., n), checked: positive, same last axis."""
    B = positive_array("batch_sizes", batch_sizes)
    lr = positive_array("lr_star", lr_star)
    if B.ndim != 1 or lr.shape[-1:] != B.shape or B.size < min_points:
        raise ValueError(
            "batch_sizes and lr_star need the same last axis and "
            f">= {min_points} points"
        )
    return np.log(B), np.log(lr)


def _scalars_as_floats(out: dict) -> dict:
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}


def fit_saturating(batch_sizes, lr_star, n_grid: int = 481) -> dict:
    """Least squares in log(lr) of :func:`saturating` for each row of
    ``lr_star`` (..., n_B): returns lr_max, b_noise and the log-RMS error
    (floats for one row).

    For a fixed B_noise the best log(lr_max) is a mean, so only B_noise is
    searched: on a log grid reaching 12 e-folds beyond the batch sizes, then on
    a fine grid around the best point, each refined by :func:`optimal_lr`'s
    parabola.
    """
    x, y = _log_batch_lr(batch_sizes, lr_star, min_points=3)

    def fit(log_b):  # log_b (..., n) -> log_lr_max, rms
        shape = -np.logaddexp(
            0, log_b[..., None] - x
        )  # log of 1 / (1 + B_noise / B)
        a = (y[..., None, :] - shape).mean(-1)
        return a, np.sqrt(
            ((a[..., None] + shape - y[..., None, :]) ** 2).mean(-1)
        )

    grid = np.linspace(
        x.min() - 12, x.max() + 12, positive_int("n_grid", n_grid)
    )
    log_b = np.log(optimal_lr(np.exp(grid), fit(grid)[1] ** 2)[0])
    step = grid[1] - grid[0]  # second pass: a fine grid around it
    fine = log_b[..., None] + np.linspace(-step, step, 41)
    log_b = (
        np.log(
            optimal_lr(
                np.exp(np.linspace(-step, step, 41)), fit(fine)[1] ** 2
            )[0]
        )
        + log_b
    )
    a, rms = fit(log_b[..., None])
    out = {
        "lr_max": np.exp(a[..., 0]),
        "b_noise": np.exp(log_b),
        "log_rms": rms[..., 0],
    }
    return _scalars_as_floats(out)


def fit_power_law(batch_sizes, lr_star) -> dict:
    """Least-squares line in log-log, lr* = coef * B**exponent, for each row of
    ``lr_star`` (..., n_B): returns coef, exponent and log-RMS error, floats
    for one row.
    """
    x, y = _log_batch_lr(batch_sizes, lr_star, min_points=2)
    xc = x - x.mean()
    k = (y * xc).sum(-1) / (xc**2).sum()
    c = y.mean(-1) - k * x.mean()
    rms = np.sqrt(np.mean((c[..., None] + k[..., None] * x - y) ** 2, axis=-1))
    out = {"coef": np.exp(c), "exponent": k, "log_rms": rms}
    return _scalars_as_floats(out)


def fits_with_intervals(optima: dict, level: float = 0.95, keep=None):
    """Both laws fitted to the uncensored lr*(B) (or the batch sizes ``keep``
    selects) and to every bootstrap resample; rows: estimate, lo, hi. "log-RMS
    power - saturating" > 0 means the
    saturating form fits better; an interval that straddles 0 is a tie."""
    import pandas as pd

    keep = ~censored(optima) if keep is None else np.asarray(keep, dtype=bool)
    B, point, boot = (
        optima["B"][keep],
        optima["lr_star"][keep],
        optima["boot"][:, keep],
    )
    pw, pw_boot = fit_power_law(B, point), fit_power_law(B, boot)
    sat, sat_boot = fit_saturating(B, point), fit_saturating(B, boot)
    rows = {
        "power-law exponent": (pw["exponent"], pw_boot["exponent"]),
        "power-law log-RMS": (pw["log_rms"], pw_boot["log_rms"]),
        "saturating lr_max": (sat["lr_max"], sat_boot["lr_max"]),
        "saturating B_noise": (sat["b_noise"], sat_boot["b_noise"]),
        "saturating log-RMS": (sat["log_rms"], sat_boot["log_rms"]),
        "log-RMS power - saturating": (
            pw["log_rms"] - sat["log_rms"],
            pw_boot["log_rms"] - sat_boot["log_rms"],
        ),
    }
    return pd.DataFrame(
        [
            {
                "estimate": est,
                **dict(zip(("lo", "hi"), percentile_interval(s, level))),
            }
            for est, s in rows.values()
        ],
        index=list(rows),
    )


def with_interval(
    estimate: float,
    lo: float,
    hi: float,
    digits: int = 2,
    decimals: int | None = None,
) -> str:
    """Prose form of an estimate and its interval, ``'0.16 [0.14, 0.18]'``:
    ``digits`` significant figures, or a fixed number of ``decimals`` (for
    exponents near zero).
    """
    from llmbook.book.fmt import sig

    def show(x):
        text = (
            sig(x, digits)
            if decimals is None
            else f"{x:.{positive_int('decimals', decimals)}f}"
        )
        return text.replace("-", "\u2212")  # a typographic minus

    return f"{show(estimate)} [{show(lo)}, {show(hi)}]"


# --- Theory: the quadratic model, noise scales, sharpness
# -----------------------------------------


def hessian_linear(X: torch.Tensor, d_out: int) -> np.ndarray:
    """Hessian of nn.MSELoss for Y = X W with respect to one output column:
    2 X^T X / (n d_out).
    """
    n = X.shape[0]
    return (2 * X.T @ X / (n * positive_int("d_out", d_out))).numpy()


def stability_limit(X: torch.Tensor, d_out: int) -> float:
    """Largest stable full-batch gradient-descent step for linear
    regression: 2 / lambda_max(H).
    """
    return float(2 / np.linalg.eigvalsh(hessian_linear(X, d_out)).max())


def noise_scale_linear(problem: Problem, W: torch.Tensor) -> dict[str, float]:
    """Gradient noise scales at weights W (d_in x d_out) from per-example
    gradients.

    B_simple = tr(Sigma) / |G|^2 and B_noise = tr(H Sigma) / (G^T H G), where G
    is the full-batch gradient and Sigma the covariance of per-example
    gradients (McCandlish et al.).
    """
    X, Y = problem.X, problem.Y
    d_out = Y.shape[1]
    per_example = (
        2 / d_out * X[:, :, None] * (X @ W - Y)[:, None, :]
    )  # (n, d_in, d_out)
    G = per_example.mean(0)
    centred = per_example - G
    trace_sigma = float((centred**2).sum((1, 2)).mean())
    H = torch.as_tensor(hessian_linear(X, d_out))
    # Sigma acts on the flattened (d_in x d_out) gradient; H acts on each
    # column alike.
    h_sigma = float(
        torch.einsum("nio,ij,njo->", centred, H, centred) / X.shape[0]
    )
    return {
        "b_simple": trace_sigma / float((G**2).sum()),
        "b_noise": h_sigma / float((G * (H @ G)).sum()),
        "loss": float(((X @ W - Y) ** 2).mean()),
    }


def quadratic_excess_loss(
    lrs, batch_size: float, steps: int, h, m2, s
) -> np.ndarray:
    """Expected excess loss after ``steps`` of SGD on a quadratic, summed over
    eigen-directions.

    Along direction k (curvature h_k) the mean error shrinks by (1 - lr h_k)
    per step from its start (m2 = its square); gradient noise of variance s_k /
    B adds variance v_k, with v_{t+1} = (1 - lr h_k)^2 v_t + lr^2 s_k / B.
    Excess loss = 1/2 sum_k h_k (mean^2 + v_k). One value per lr; ``inf``
    beyond the stability limit (some |1 - lr h_k| >= 1).
    """
    lr = positive_array("lrs", lrs)[:, None]
    h, m2, s = (
        positive_array("h", h),
        np.asarray(m2, float),
        np.asarray(s, float),
    )
    B, T = positive("batch_size", batch_size), positive_int("steps", steps)
    q = (1 - lr * h) ** 2  # (n_lrs, n_directions)
    with np.errstate(all="ignore"):  # inf beyond the stability limit
        noise = lr**2 * s / B * np.where(q < 1, (1 - q**T) / (1 - q), np.inf)
        out = 0.5 * (h * (q**T * m2 + noise)).sum(1)
    return np.where(np.all(q < 1, axis=1), out, np.inf)


def linear_theory(problem: Problem) -> dict[str, np.ndarray]:
    """Inputs of :func:`quadratic_excess_loss` for the linear problem started
    at W = 0.

    Eigenvalues h_k of the MSE Hessian (each repeated for every output column),
    the squared start error m_k^2 = (W* along k)^2 with W* the least-squares
    fit, and the per-example gradient noise at W*, whose covariance is (2
    sigma^2 / d_out) H, so s_k = 2 sigma^2 h_k / d_out.
    """
    X, Y = problem.X.double(), problem.Y.double()
    d_out = Y.shape[1]
    h, V = np.linalg.eigh(hessian_linear(X, d_out))
    W_star = torch.linalg.lstsq(X, Y).solution.numpy()
    m2 = (V.T @ W_star) ** 2  # (d_in, d_out): direction k, output column o
    h_all = np.repeat(h, d_out)
    return {
        "h": h_all,
        "m2": m2.reshape(-1),
        "s": 2 * problem.noise_sigma**2 * h_all / d_out,
    }


def theory_optimal_lr(
    theory: dict, batch_size: float, steps: int, lrs=None
) -> float:
    """The lr minimising :func:`quadratic_excess_loss` on a fine log grid."""
    grid = (
        np.logspace(-4, 2, 1201) if lrs is None else positive_array("lrs", lrs)
    )
    loss = quadratic_excess_loss(
        grid, batch_size, steps, theory["h"], theory["m2"], theory["s"]
    )
    return float(grid[int(np.argmin(loss))])


def log_law_lr(h: float, m2: float, s: float, batch_size, steps: int):
    """Small-step optimum of one direction, eta* = ln(4 h^2 T m2 B / s) / (2 h
    T): the minimiser of m2 exp(-2 eta h T) + eta s / (2 h B), valid while eta*
    h << 1 (see the chapter, (a)).
    """
    h, m2, s = positive("h", h), positive("m2", m2), positive("s", s)
    B, T = (
        positive_array("batch_size", batch_size),
        positive_int("steps", steps),
    )
    return np.log(4 * h**2 * T * m2 * B / s) / (2 * h * T)


def hessian_vector_product(
    model: str, params, X: torch.Tensor, Y: torch.Tensor, v
):
    """H v for every run at once, H the Hessian of that run's full-batch MSE on
    (X, Y).

    ``v`` is a list shaped like ``params``. Runs are independent, so the
    Hessian of the sum of their losses is block-diagonal and one double
    backward pass gives every run's product.
    """
    leaves = [p.detach().requires_grad_() for p in params]
    loss = ((forward(model, leaves, X) - Y) ** 2).mean(dim=(-2, -1)).sum()
    grads = torch.autograd.grad(loss, leaves, create_graph=True)
    return torch.autograd.grad(
        sum((g * u).sum() for g, u in zip(grads, v)), leaves
    )


def sharpness(
    model: str,
    params,
    X: torch.Tensor,
    Y: torch.Tensor,
    iters: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Largest-magnitude Hessian eigenvalue of each run's full-batch loss
    (shape of the runs), by power iteration with
    :func:`hessian_vector_product`; the stable SGD step is below 2 / it.
    """
    g = torch.Generator().manual_seed(int(seed))
    v = [torch.randn(p.shape, generator=g) for p in params]
    for _ in range(positive_int("iters", iters)):
        norm = torch.sqrt(sum((u**2).sum((-2, -1)) for u in v))[
            ..., None, None
        ]
        v = [u / norm for u in v]
        Hv = hessian_vector_product(model, params, X, Y, v)
        lam = sum(
            (u * w).sum((-2, -1)) for u, w in zip(v, Hv)
        )  # Rayleigh quotient
        v = Hv
    return lam.detach().numpy()


# --- Figures
# -----------------------------------------------------------------------------
# -------


def plot_loss_curves(
    lrs, losses: dict, title: str, floor: float, ceiling: float | None = None
):
    """Mean test loss over seeds against lr, one curve per batch size; diverged
    lrs marked x at
    the top of the axis."""
    from llmbook.book.plotting import new_axes

    lrs = positive_array("lrs", lrs)
    ceiling = 3 * floor if ceiling is None else ceiling
    fig, ax = new_axes(
        "learning rate (log scale)",
        "test MSE after training",
        title,
        logx=True,
    )
    for i, (B, L) in enumerate(losses.items()):
        mean = np.atleast_2d(L).mean(0)  # inf where any seed diverged
        ok = np.isfinite(mean)
        ax.plot(
            lrs[ok],
            np.minimum(mean[ok], ceiling),
            color=f"C{i % 8}",
            label=f"B = {B}",
        )
        ax.plot(
            lrs[~ok], np.full((~ok).sum(), ceiling), "x", color=f"C{i % 8}"
        )
    ax.set_ylim(0.95 * floor, 1.02 * ceiling)
    ax.axhline(floor, color="grey", ls=":", lw=1)
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_optimum(tables: dict, title: str, level: float = 0.95):
    """lr* against batch size on log-log axes, one series per
    :func:`optimum_table`, with its bootstrap interval as error bars. Censored
    optima are open triangles pointing to where the
    true optimum may lie. Returns ``(fig, ax)`` for overlays."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes(
        "batch size B",
        "optimal learning rate lr*",
        title,
        logx=True,
        logy=True,
    )
    for i, (name, t) in enumerate(tables.items()):
        cens = t["censored"].to_numpy(bool)
        ok = t[~cens]
        ax.errorbar(
            ok.index,
            ok["lr*"],
            yerr=[ok["lr*"] - ok["lo"], ok["hi"] - ok["lr*"]],
            fmt="o-" if len(tables) > 1 else "o",
            capsize=3,
            color=f"C{i}",
            label=f"{name} ({level:.0%} interval)",
        )
        for side, marker in ((-1, "v"), (1, "^")):
            sel = t[cens & (t["edge"].to_numpy() == side)]
            ax.plot(
                sel.index,
                sel["lr*"],
                marker,
                mfc="none",
                ms=9,
                color=f"C{i}",
                label=(
                    "censored at the grid's edge (not fitted)"
                    if len(sel)
                    else None
                ),
            )
    ax.legend(fontsize=8)
    return fig, ax
