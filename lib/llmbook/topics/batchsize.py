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


def add_theory_rows(fits, optima: dict, theory_lr, keep, level=0.95):
    """Add to :func:`fits_with_intervals`' table the log-RMS error of a
    theory's lr* (no fitted constant) against the kept optima, and the
    saturating form's log-RMS minus it (> 0: the theory fits better), each
    with its bootstrap interval over the same resamples. Returns ``fits``.
    """
    keep = np.asarray(keep, dtype=bool)
    theory = positive_array("theory_lr", theory_lr)[keep]
    point, boot = optima["lr_star"][keep], optima["boot"][:, keep]
    rms = np.sqrt(np.mean(np.log(point / theory) ** 2))
    rms_boot = np.sqrt(np.mean(np.log(boot / theory) ** 2, axis=1))
    sat = fit_saturating(optima["B"][keep], boot)["log_rms"]
    fits.loc["theory log-RMS"] = [
        rms,
        *percentile_interval(rms_boot, level),
    ]
    fits.loc["log-RMS saturating - theory"] = [
        fits.loc["saturating log-RMS", "estimate"] - rms,
        *percentile_interval(sat - rms_boot, level),
    ]
    return fits


def exponent_table(optima_by_name: dict, level: float = 0.95, keep=None):
    """One row per sweep (name -> :func:`bootstrap_optima`): the power-law
    exponent with its interval, and the censored batch sizes."""
    import pandas as pd

    rows = {}
    for name, optima in optima_by_name.items():
        row = fits_with_intervals(optima, level, keep)
        rows[name] = {
            **row.loc["power-law exponent"].to_dict(),
            "censored batch sizes": [
                int(b) for b in optima["B"][censored(optima)]
            ],
        }
    return pd.DataFrame(rows).T


DRAW_WORDS = {
    "better": "the saturating form fits better",
    "worse": "the power law fits better",
    "within noise": "the two tie",
}


def draw_row(problem: Problem, optima: dict, steps: int, level=0.95):
    """One data draw's fixed-steps sweep (:func:`sweep` on ``problem``)
    summarised as part (a) of hw11-q4 reads it: the power-law exponent of
    lr*(B) with its bootstrap interval, which law fits the uncensored
    optima better (log-RMS power minus saturating, its interval against
    zero, words of :data:`DRAW_WORDS`), and the smallest and largest ratio
    of measured to theory optimum (:func:`theory_optimal_lr` with the
    state-dependent noise) over every batch size. Returns a dict; the batch-size notebook's
    table of data draws has one per draw.
    """
    from llmbook.core.stats import compare

    fits = fits_with_intervals(optima, level)
    theory = linear_theory(problem)
    predicted = np.array(
        [
            theory_optimal_lr(theory, B, steps, state_noise=True)
            for B in optima["B"]
        ]
    )
    keep = ~censored(optima)
    ratio = optima["lr_star"] / predicted  # every B, as the page says
    diff = fits.loc["log-RMS power - saturating"]
    exp = fits.loc["power-law exponent"]
    return {
        "exponent": float(exp["estimate"]),
        "exponent lo": float(exp["lo"]),
        "exponent hi": float(exp["hi"]),
        "log-RMS power - saturating": float(diff["estimate"]),
        "which fits better": DRAW_WORDS[
            compare((diff["lo"], diff["hi"]), (0.0, 0.0))
        ],
        "measured / theory, min": float(ratio.min()),
        "measured / theory, max": float(ratio.max()),
        "censored": int((~keep).sum()),
    }


def verdict_counts(verdicts) -> str:
    """Prose count of the verdicts of several draws, most frequent first:
    ``'the two tie in 2 and the power law fits better in 1 of 3 draws'``,
    or ``'the two tie in all 3 draws'``."""
    from collections import Counter

    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("verdicts must not be empty")
    n = len(verdicts)
    counts = Counter(verdicts).most_common()
    if len(counts) == 1:
        return f"{counts[0][0]} in {'all ' if n > 1 else ''}{n} draw" + (
            "s" if n > 1 else ""
        )
    parts = [f"{v} in {k}" for v, k in counts]
    return f"{', '.join(parts[:-1])} and {parts[-1]} of {n} draws"


def log_law_table(theory: dict, batch_sizes, steps: int):
    """The log law of :func:`log_law_lr` against the exact optimum of the
    problem averaged over directions (mean h, m2, s), per batch size; and
    the batch size at which the log law would reach 1/h.

    Returns ``(table, B_cross, h_bar)``.
    """
    import pandas as pd

    h, m2, s = (float(np.mean(theory[k])) for k in ("h", "m2", "s"))
    iso = {"h": np.array([h]), "m2": np.array([m2]), "s": np.array([s])}
    B = positive_array("batch_sizes", batch_sizes)
    table = pd.DataFrame(
        {
            "log law": log_law_lr(h, m2, s, B, steps),
            "exact (averaged problem)": [
                theory_optimal_lr(iso, b, steps) for b in B
            ],
        },
        index=pd.Index(B.astype(int), name="batch size"),
    )
    table["eta* h (exact)"] = table["exact (averaged problem)"] * h
    # ln(4 h^2 T m2 B / s) = 2 T, where eta* reaches 1/h
    B_cross = s * np.exp(2 * steps) / (4 * h**2 * steps * m2)
    return table, float(B_cross), h


def sweep(
    problem: Problem,
    model: str,
    lrs,
    batch_sizes,
    steps,
    n_seeds: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    **options,
):
    """:func:`train_sweep` at every batch size, then
    :func:`bootstrap_optima` and :func:`optimum_table`: returns
    ``(losses, optima, table)``. ``steps``: a number, or a function of
    the batch size (a fixed number of examples); ``options`` go to
    :func:`train_runs`.
    """

    def budget(B):
        return steps(B) if callable(steps) else steps

    losses = {
        int(B): train_sweep(
            problem, model, lrs, B, budget(B), n_seeds, seed=seed, **options
        )
        for B in batch_sizes
    }
    optima = bootstrap_optima(lrs, losses, n_boot, seed=seed)
    return losses, optima, optimum_table(optima, level)


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
        "c": h * d_out / 2,  # eigenvalues of the inputs' second moment
        "sigma2": float(problem.noise_sigma**2),
        "d_out": int(d_out),
    }


def state_noise_excess_loss(
    lrs, batch_size: float, steps: int, theory: dict
) -> np.ndarray:
    """Expected excess loss after ``steps`` of SGD on linear regression with
    Gaussian inputs, counting the gradient noise of the current error.

    In the eigenbasis of the inputs' second moment (eigenvalues c_k, so
    h_k = 2 c_k / d_out) the per-example gradient of output column o at
    error e = W - W* has variance, along direction k,
    a^2 [c_k (sigma^2 + sum_j c_j e_jo^2) + c_k^2 e_ko^2], a = 2 / d_out
    (the fourth moment of a Gaussian). Its first term at e = 0 is the
    additive noise s_k of :func:`quadratic_excess_loss`; the rest grows with
    the error. The second moments u_ko = E e_ko^2 then obey the closed
    recursion u <- (1 - lr h_k)^2 u + lr^2 / B * variance(u), iterated from
    u = m2. Returns 1/2 sum h_k u_k per lr (``inf`` where it overflows).

    ``theory``: :func:`linear_theory`'s dict (needs "c", "m2", "sigma2",
    "d_out").
    """
    lr = positive_array("lrs", lrs)[:, None, None]
    B, T = positive("batch_size", batch_size), positive_int("steps", steps)
    c = positive_array("c", theory["c"])[:, None]  # (d_in, 1)
    d_out = positive_int("d_out", theory["d_out"])
    a2, sigma2 = (2 / d_out) ** 2, float(theory["sigma2"])
    h = 2 * c / d_out
    u = np.broadcast_to(
        np.asarray(theory["m2"], float).reshape(c.size, d_out),
        (lr.shape[0], c.size, d_out),
    ).copy()
    q = (1 - lr * h) ** 2
    with np.errstate(all="ignore"):  # overflow far past the stable steps
        for _ in range(T):
            col = (c * u).sum(-2, keepdims=True)  # sum_j c_j u_jo
            var = a2 * (c * (sigma2 + col) + c**2 * u)
            u = q * u + lr**2 / B * var
        out = 0.5 * (h * u).sum((-2, -1))
    return np.where(np.isfinite(out), out, np.inf)


def theory_optimal_lr(
    theory: dict,
    batch_size: float,
    steps: int,
    lrs=None,
    state_noise: bool = False,
) -> float:
    """The lr minimising :func:`quadratic_excess_loss` (or, with
    ``state_noise``, :func:`state_noise_excess_loss`) on a fine log grid."""
    grid = (
        np.logspace(-4, 2, 1201) if lrs is None else positive_array("lrs", lrs)
    )
    if state_noise:
        loss = state_noise_excess_loss(grid, batch_size, steps, theory)
    else:
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
    """Mean test loss over seeds against lr, one curve per batch size.

    The y axis ends at ``ceiling`` (default 3 * floor): a mean above it is
    drawn at the top as an open circle (clipped, not a plateau), and a
    learning rate at which a run diverged as an x there; the legend says
    so whenever it happens."""
    from llmbook.book.plotting import new_axes

    lrs = positive_array("lrs", lrs)
    ceiling = 3 * floor if ceiling is None else ceiling
    fig, ax = new_axes(
        "learning rate (log scale)",
        "test MSE after training",
        title,
        logx=True,
    )
    any_clipped = any_diverged = False
    for i, (B, L) in enumerate(losses.items()):
        mean = np.atleast_2d(L).mean(0)  # inf where any seed diverged
        ok = np.isfinite(mean)
        above = ok & (mean > ceiling)
        colour = f"C{i % 8}"
        ax.plot(
            lrs[ok],
            np.minimum(mean[ok], ceiling),
            color=colour,
            label=f"B = {B}",
        )
        top = np.full(lrs.size, ceiling)
        ax.plot(lrs[above], top[above], "o", mfc="none", ms=4, color=colour)
        ax.plot(lrs[~ok], top[~ok], "x", color=colour)
        any_clipped |= bool(above.any())
        any_diverged |= bool((~ok).any())
    for shown, marker, text in (
        (any_clipped, "o", f"mean above {ceiling:.3g}, drawn at the top"),
        (any_diverged, "x", "a run diverged"),
    ):
        if shown:
            ax.plot([], [], marker, mfc="none", color="grey", label=text)
    ax.set_ylim(0.95 * floor, 1.02 * ceiling)
    ax.axhline(floor, color="grey", ls=":", lw=1)
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_fits(ax, table, power: bool = True, color=None) -> None:
    """Draw on ``ax`` the saturating form (dotted) and, if ``power``, the
    power law (dashed) fitted to the uncensored optima of an
    :func:`optimum_table`, across its batch sizes."""
    ok = ~table["censored"].to_numpy(bool)
    B = table.index.to_numpy(float)
    grid = np.logspace(np.log10(B.min()), np.log10(B.max()), 100)
    sat = fit_saturating(B[ok], table["lr*"].to_numpy()[ok])
    if power:
        pw = fit_power_law(B[ok], table["lr*"].to_numpy()[ok])
        label = f"power law, exponent {pw['exponent']:.2f}"
        ax.plot(grid, pw["coef"] * grid ** pw["exponent"], "--", label=label)
    ax.plot(
        grid,
        saturating(grid, sat["lr_max"], sat["b_noise"]),
        ":",
        color=color,
        label="lr_max / (1 + B_noise / B)",
    )


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


def plot_sharpness_scan(lrs, sharp, lr_star: float, test_mse, title: str):
    """Sharpness at the end of training against the learning rate it was
    trained with: the median over seeds with their range (``sharp``:
    (seeds, lrs), nan for a diverged run), the edge 2 / lr, the optimum
    lr* (vertical line) and, on a second axis, the mean test MSE.
    Returns ``(fig, ax)``."""
    from llmbook.book.plotting import new_axes

    lrs = positive_array("lrs", lrs)
    sharp = np.asarray(sharp, dtype=float)
    med = np.nanmedian(sharp, axis=0)
    fig, ax = new_axes(
        "learning rate (log scale)",
        "sharpness at the end of training",
        title,
        logx=True,
        logy=True,
    )
    ax.errorbar(
        lrs,
        med,
        yerr=[med - np.nanmin(sharp, 0), np.nanmax(sharp, 0) - med],
        fmt="o-",
        capsize=3,
        color="C3",
        label="sharpness (median, seed range)",
    )
    ax.plot(lrs, 2 / lrs, "k--", lw=1, label="edge of stability 2 / lr")
    ax.axvline(lr_star, color="grey", ls=":", lw=1, label="optimum lr*")
    right = ax.twinx()
    right.plot(lrs, np.asarray(test_mse, float), "s:", color="C0", ms=4)
    right.set_ylabel("mean test MSE (squares)", color="C0")
    ax.legend(fontsize=8, loc="lower left")
    return fig, ax


def plot_exponents_by_draw(rows: dict, title: str, reference: float = 0.5):
    """Power-law exponent with its bootstrap interval per teacher draw,
    one series per optimiser: ``rows[name]`` is a DataFrame indexed by draw
    with "estimate", "lo", "hi". A grey line marks ``reference`` (the
    square-root rule). Returns ``(fig, ax)``."""
    from llmbook.book.plotting import new_axes

    fig, ax = new_axes("teacher draw (data seed)", "exponent of lr*(B)", title)
    for i, (name, t) in enumerate(rows.items()):
        x = np.arange(len(t)) + 0.1 * (i - (len(rows) - 1) / 2)
        est = t["estimate"].to_numpy(float)
        ax.errorbar(
            x,
            est,
            yerr=[
                est - t["lo"].to_numpy(float),
                t["hi"].to_numpy(float) - est,
            ],
            fmt="o",
            capsize=3,
            color=f"C{i}",
            label=name,
        )
        ax.set_xticks(np.arange(len(t)), [str(s) for s in t.index])
    ax.axhline(
        reference, color="grey", ls="--", lw=1, label="square-root rule"
    )
    ax.axhline(0, color="grey", ls=":", lw=1)
    ax.legend(fontsize=8)
    return fig, ax
