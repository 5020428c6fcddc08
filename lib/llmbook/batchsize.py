"""Learning rate against batch size: vectorised sweeps, optimum finding, and the fits.

Every learning rate and seed of a sweep trains at once: weights carry a leading "run"
axis of size R = n_lrs * n_seeds and each step is one batched tensor computation, not a
Python loop over runs. Derived in the chapter "Scaling laws of batch size" (hw11-q4).
Loss is nn.MSELoss's: the mean over samples *and* output dimensions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import curve_fit

from ._validate import positive, positive_array, positive_int

DIVERGED = float("inf")


def lr_grid(lr_min: float, n: int = 32, factor: float = 1.25) -> np.ndarray:
    """Geometric grid ``lr_min * factor**k`` for k = 0 .. n-1."""
    lr_min, n, factor = positive("lr_min", lr_min), positive_int("n", n), positive("factor", factor)
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    return lr_min * factor ** np.arange(n)


@dataclass
class Problem:
    """A regression data set: train/test inputs and targets (rows are examples)."""

    X: torch.Tensor
    Y: torch.Tensor
    X_test: torch.Tensor
    Y_test: torch.Tensor
    noise_sigma: float


def linear_problem(n_train: int = 10_000, n_test: int = 1_000, d: int = 16, sigma: float = 5.0,
                   seed: int = 0) -> Problem:
    """Y = X W* + sigma * noise with X, W* standard normal (d x d): the homework's set-up."""
    n_train, n_test, d = positive_int("n_train", n_train), positive_int("n_test", n_test), positive_int("d", d)
    sigma = positive("sigma", sigma)
    g = torch.Generator().manual_seed(int(seed))
    W = torch.randn(d, d, generator=g, dtype=torch.float32)
    X = torch.randn(n_train + n_test, d, generator=g, dtype=torch.float32)
    Y = X @ W + sigma * torch.randn(n_train + n_test, d, generator=g, dtype=torch.float32)
    return Problem(X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], sigma)


def mlp_problem(n_train: int = 10_000, n_test: int = 1_000, d: int = 4, sigma: float = 2.0,
                seed: int = 0) -> Problem:
    """Teacher relu(X W1) W2 plus sigma * noise, X, W1, W2 standard normal (d x d)."""
    n_train, n_test, d = positive_int("n_train", n_train), positive_int("n_test", n_test), positive_int("d", d)
    sigma = positive("sigma", sigma)
    g = torch.Generator().manual_seed(int(seed))
    W1, W2 = torch.randn(d, d, generator=g, dtype=torch.float32), torch.randn(d, d, generator=g, dtype=torch.float32)
    X = torch.randn(n_train + n_test, d, generator=g, dtype=torch.float32)
    Y = torch.relu(X @ W1) @ W2 + sigma * torch.randn(n_train + n_test, d, generator=g, dtype=torch.float32)
    return Problem(X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], sigma)


def init_params(model: str, runs: int, d_in: int, d_out: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Batched initial parameters: zeros for "linear"; nn.Linear's uniform(+-1/sqrt(fan_in)) for "mlp"."""
    if model == "linear":
        return [torch.zeros(runs, d_in, d_out, dtype=torch.float32)]
    if model == "mlp":
        bound = 1 / math.sqrt(d_in)  # both layers have fan_in = d_in (hidden width = d_in)
        shapes = [(runs, d_in, d_in), (runs, 1, d_in), (runs, d_in, d_out), (runs, 1, d_out)]
        return [(torch.rand(s, generator=generator, dtype=torch.float32) * 2 - 1) * bound for s in shapes]
    raise ValueError(f"model must be 'linear' or 'mlp', got {model!r}")


def forward(model: str, params: list[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """Batched forward pass. X: (R, B, d_in) or (B, d_in) shared by all runs -> (R, B, d_out)."""
    if model == "linear":
        (W,) = params
        return X @ W if X.dim() == 3 else torch.einsum("bi,rio->rbo", X, W)
    W1, b1, W2, b2 = params
    h = (X @ W1 if X.dim() == 3 else torch.einsum("bi,rih->rbh", X, W1)) + b1
    return torch.relu(h) @ W2 + b2


def loss_and_grads(model: str, params: list[torch.Tensor], X: torch.Tensor, Y: torch.Tensor):
    """Per-run MSE (R,) and its gradients for every parameter, by hand (no autograd).

    X: (R, B, d_in), Y: (R, B, d_out). The loss is the mean over the B examples and d_out outputs.
    """
    R, B, d_out = Y.shape
    if model == "linear":
        # Through the batch's second moments: one (d_in + d_out)^2 product per run instead
        # of three thin batched matmuls, several times faster on a CPU.
        (W,) = params
        d_in = X.shape[2]
        Z = torch.cat([X, Y], dim=2)
        M = Z.transpose(1, 2) @ Z / B
        Mxx, Mxy = M[:, :d_in, :d_in], M[:, :d_in, d_in:]
        yy = M[:, d_in:, d_in:].diagonal(dim1=1, dim2=2).sum(1)
        MxxW = Mxx @ W
        loss = ((W * MxxW).sum((1, 2)) - 2 * (W * Mxy).sum((1, 2)) + yy) / d_out
        return loss, [2 * (MxxW - Mxy) / d_out]
    W1, b1, W2, b2 = params
    h = X @ W1 + b1
    a = torch.relu(h)
    err = a @ W2 + b2 - Y
    g_out = 2 * err / (B * d_out)                         # (R, B, d_out)
    g_h = (g_out @ W2.transpose(1, 2)) * (h > 0)           # (R, B, hidden)
    grads = [X.transpose(1, 2) @ g_h, g_h.sum(1, keepdim=True), a.transpose(1, 2) @ g_out, g_out.sum(1, keepdim=True)]
    return (err**2).mean(dim=(1, 2)), grads


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 10) -> float:
    """Multiplier of the peak lr: linear warm-up over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * progress))


def train_sweep(problem: Problem, model: str, lrs, batch_size: int, steps: int, n_seeds: int = 1,
                optimizer: str = "sgd", adam_betas: tuple[float, float] = (0.9, 0.999),
                weight_decay: float = 0.0, warmup_steps: int = 10, seed: int = 0,
                max_loss: float = 1e6) -> np.ndarray:
    """Train every (seed, lr) pair at once; return final test MSE, shape (n_seeds, n_lrs).

    Batches are sampled with replacement, independently per run. ``optimizer`` is "sgd"
    (constant lr) or "adam" (torch.optim.Adam's update with L2 ``weight_decay``, lr following
    :func:`warmup_cosine`). Runs whose loss exceeds ``max_loss`` or becomes non-finite are
    frozen and reported as ``inf`` (diverged).
    """
    lrs_np = positive_array("lrs", lrs)
    if lrs_np.ndim != 1:
        raise ValueError("lrs must be a one-dimensional grid")
    batch_size, steps, n_seeds = positive_int("batch_size", batch_size), positive_int("steps", steps), positive_int("n_seeds", n_seeds)
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    R, n, d_in, d_out = n_seeds * lrs_np.size, problem.X.shape[0], problem.X.shape[1], problem.Y.shape[1]
    g = torch.Generator().manual_seed(int(seed))
    params = init_params(model, R, d_in, d_out, g)
    lr = torch.tensor(np.tile(lrs_np, n_seeds), dtype=torch.float32)  # run r = seed * n_lrs + lr index
    alive = torch.ones(R, dtype=torch.bool)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2 = adam_betas
    for t in range(steps):
        idx = torch.randint(n, (R, batch_size), generator=g)
        per_run, grads = loss_and_grads(model, params, problem.X[idx], problem.Y[idx])
        alive &= torch.isfinite(per_run) & (per_run < max_loss)
        scale = (lr * alive).view(-1, 1, 1)
        if optimizer == "adam":
            scale = scale * warmup_cosine(t, steps, warmup_steps)
        for i, (p, gr) in enumerate(zip(params, grads)):
            gr = torch.nan_to_num(gr, nan=0.0, posinf=0.0, neginf=0.0)
            if optimizer == "sgd":
                p -= scale * gr
                p.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
                continue
            gr = gr + weight_decay * p
            m[i].mul_(b1).add_((1 - b1) * gr)
            v[i].mul_(b2).add_((1 - b2) * gr * gr)
            m_hat, v_hat = m[i] / (1 - b1 ** (t + 1)), v[i] / (1 - b2 ** (t + 1))
            p -= scale * m_hat / (v_hat.sqrt() + 1e-8)
    test = ((forward(model, params, problem.X_test) - problem.Y_test) ** 2).mean(dim=(1, 2))
    test = torch.where(alive & torch.isfinite(test) & (test < max_loss), test, torch.full_like(test, DIVERGED))
    return test.numpy().reshape(n_seeds, lrs_np.size)


def train_one(problem: Problem, model: str, lr: float, batch_size: int, steps: int, seed: int = 0) -> float:
    """Reference implementation: one SGD run with an ordinary torch.optim.SGD loop (for benchmarks and tests)."""
    g = torch.Generator().manual_seed(int(seed))
    params = [p[0].clone().requires_grad_() for p in init_params(model, 1, problem.X.shape[1], problem.Y.shape[1], g)]
    opt = torch.optim.SGD(params, lr=positive("lr", lr))
    for _ in range(positive_int("steps", steps)):
        idx = torch.randint(problem.X.shape[0], (batch_size,), generator=g)
        out = forward(model, [p.unsqueeze(0) for p in params], problem.X[idx].unsqueeze(0))[0]
        loss = ((out - problem.Y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = forward(model, [p.unsqueeze(0) for p in params], problem.X_test)[0]
        return float(((out - problem.Y_test) ** 2).mean())


def benchmark(problem: Problem, model: str, lrs, batch_size: int, steps: int) -> dict[str, float]:
    """Time the same sweep vectorised (one batched run) and as a Python loop over runs."""
    lrs = positive_array("lrs", lrs)
    start = time.perf_counter()
    train_sweep(problem, model, lrs, batch_size, steps)
    vectorised = time.perf_counter() - start
    start = time.perf_counter()
    for lr in lrs:
        train_one(problem, model, float(lr), batch_size, steps)
    looped = time.perf_counter() - start
    return {"runs": float(lrs.size), "vectorised_s": vectorised, "loop_s": looped, "speedup": looped / vectorised}


def optimal_lr(lrs, losses) -> tuple[float, bool]:
    """Learning rate of lowest loss, refined by a parabola through its neighbours in log(lr).

    Returns ``(lr_star, at_edge)``; ``at_edge`` is True when the minimum is the first or last
    grid point (then the grid should be widened). Diverged runs (inf) count as infinitely bad.
    """
    lrs, losses = positive_array("lrs", lrs), np.asarray(losses, dtype=float)
    if losses.shape != lrs.shape:
        raise ValueError(f"losses must have the shape of lrs {lrs.shape}, got {losses.shape}")
    if not np.any(np.isfinite(losses)):
        raise ValueError("losses: every run diverged")
    k = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.inf)))
    if k == 0 or k == lrs.size - 1 or not np.all(np.isfinite(losses[k - 1:k + 2])):
        return float(lrs[k]), k in (0, lrs.size - 1)
    x, y = np.log(lrs[k - 1:k + 2]), losses[k - 1:k + 2]
    a, b, _ = np.polyfit(x, y, 2)
    x_star = -b / (2 * a) if a > 0 else x[1]
    return float(np.exp(np.clip(x_star, x[0], x[2]))), False


def saturating(B, lr_max: float, b_noise: float):
    """lr*(B) = lr_max / (1 + B_noise / B) (McCandlish et al. 2018)."""
    return lr_max / (1 + b_noise / np.asarray(B, dtype=float))


def fit_saturating(batch_sizes, lr_star) -> dict[str, float]:
    """Least squares in log(lr) of :func:`saturating`; returns lr_max, b_noise and the log-RMS error."""
    B, lr = positive_array("batch_sizes", batch_sizes), positive_array("lr_star", lr_star)
    if B.shape != lr.shape or B.size < 3:
        raise ValueError("batch_sizes and lr_star need the same shape and at least 3 points")

    def model(logB, log_lr_max, log_b_noise):
        return log_lr_max - np.log1p(np.exp(log_b_noise - logB))

    p0 = [np.log(lr.max()), np.log(np.median(B))]
    (a, b), _ = curve_fit(model, np.log(B), np.log(lr), p0=p0, maxfev=20_000)
    rms = float(np.sqrt(np.mean((model(np.log(B), a, b) - np.log(lr)) ** 2)))
    return {"lr_max": float(np.exp(a)), "b_noise": float(np.exp(b)), "log_rms": rms}


def fit_power_law(batch_sizes, lr_star) -> dict[str, float]:
    """Least squares line in log-log: lr* = coef * B**exponent; returns coef, exponent, log-RMS error."""
    B, lr = positive_array("batch_sizes", batch_sizes), positive_array("lr_star", lr_star)
    if B.shape != lr.shape or B.size < 2:
        raise ValueError("batch_sizes and lr_star need the same shape and at least 2 points")
    k, c = np.polyfit(np.log(B), np.log(lr), 1)
    rms = float(np.sqrt(np.mean((c + k * np.log(B) - np.log(lr)) ** 2)))
    return {"coef": float(np.exp(c)), "exponent": float(k), "log_rms": rms}


def hessian_linear(X: torch.Tensor, d_out: int) -> np.ndarray:
    """Hessian of nn.MSELoss for Y = X W with respect to one output column: 2 X^T X / (n d_out)."""
    n = X.shape[0]
    return (2 * X.T @ X / (n * positive_int("d_out", d_out))).numpy()


def stability_limit(X: torch.Tensor, d_out: int) -> float:
    """Largest stable full-batch gradient-descent step for linear regression: 2 / lambda_max(H)."""
    return float(2 / np.linalg.eigvalsh(hessian_linear(X, d_out)).max())


def noise_scale_linear(problem: Problem, W: torch.Tensor) -> dict[str, float]:
    """Gradient noise scales at weights W (d_in x d_out) from per-example gradients.

    B_simple = tr(Sigma) / |G|^2 and B_noise = tr(H Sigma) / (G^T H G), where G is the
    full-batch gradient and Sigma the covariance of per-example gradients (McCandlish et al. 2018).
    """
    X, Y = problem.X, problem.Y
    d_out = Y.shape[1]
    per_example = 2 / d_out * X[:, :, None] * (X @ W - Y)[:, None, :]     # (n, d_in, d_out)
    G = per_example.mean(0)
    centred = (per_example - G).reshape(X.shape[0], -1)
    trace_sigma = float((centred**2).sum(1).mean())
    H = torch.as_tensor(hessian_linear(X, d_out))
    HG = H @ G
    # Sigma acts on the flattened (d_in x d_out) gradient; H acts on each column alike.
    h_sigma = float(torch.einsum("nio,ij,njo->", centred.view_as(per_example), H, centred.view_as(per_example)) / X.shape[0])
    return {"b_simple": trace_sigma / float((G**2).sum()), "b_noise": h_sigma / float((G * HG).sum()),
            "loss": float(((X @ W - Y) ** 2).mean())}


def quadratic_excess_loss(lrs, batch_size: float, steps: int, h, m2, s) -> np.ndarray:
    """Expected excess loss after ``steps`` of SGD on a quadratic, per eigen-direction summed.

    Loss excess = 1/2 sum_k h_k e_k^2. Along direction k the mean error shrinks by (1 - lr h_k)
    per step from its start m_k (``m2`` = m_k^2), and gradient noise of variance s_k / B adds
    variance v_k with v_{t+1} = (1 - lr h_k)^2 v_t + lr^2 s_k / B. Returns one value per lr
    (``inf`` where some |1 - lr h_k| >= 1, i.e. beyond the stability limit 2 / max h).
    """
    lr = positive_array("lrs", lrs)[:, None]
    h, m2, s = positive_array("h", h)[None, :], np.asarray(m2, float)[None, :], np.asarray(s, float)[None, :]
    B, T = positive("batch_size", batch_size), positive_int("steps", steps)
    q = (1 - lr * h) ** 2
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        decay = q**T
        noise = np.where(q < 1, lr**2 * s / B * (1 - decay) / (1 - q), np.inf)
        out = 0.5 * (h * (decay * m2 + noise)).sum(1)
    out[np.any(q >= 1, axis=1)] = np.inf
    return out


def linear_theory(problem: Problem) -> dict[str, np.ndarray]:
    """Inputs of :func:`quadratic_excess_loss` for the linear problem started at W = 0.

    Eigenvalues h_k of the MSE Hessian (each repeated for every output column), the squared
    start error m_k^2 = ((W0 - W*) along k)^2 with W* the least-squares fit, and the per-example
    gradient noise at W*, whose covariance is (2 sigma^2 / d_out) H, so s_k = 2 sigma^2 h_k / d_out.
    """
    X, Y = problem.X.double(), problem.Y.double()
    d_out = Y.shape[1]
    h, V = np.linalg.eigh(hessian_linear(X, d_out))
    W_star = torch.linalg.lstsq(X, Y).solution.numpy()
    m2 = ((V.T @ W_star) ** 2)                     # (d_in, d_out): direction k, output column o
    h_all = np.repeat(h, d_out)
    return {"h": h_all, "m2": m2.reshape(-1), "s": 2 * problem.noise_sigma**2 * h_all / d_out}


def theory_optimal_lr(theory: dict, batch_size: float, steps: int, lrs=None) -> float:
    """The lr minimising :func:`quadratic_excess_loss` on a fine log grid."""
    grid = np.logspace(-4, 2, 1201) if lrs is None else positive_array("lrs", lrs)
    loss = quadratic_excess_loss(grid, batch_size, steps, theory["h"], theory["m2"], theory["s"])
    return float(grid[int(np.argmin(loss))])


def optimum_table(lrs, losses: dict):
    """Per batch size: the geometric mean over seeds of each seed's best lr, its log-std, how many
    optima sit at the grid's edge, and how many runs diverged. ``losses[B]`` is (seeds, lrs)."""
    import pandas as pd

    lrs = positive_array("lrs", lrs)
    rows = []
    for B, L in losses.items():
        best = [optimal_lr(lrs, seed_losses) for seed_losses in np.atleast_2d(L)]
        logs = np.log([b for b, _ in best])
        rows.append({"batch size": B, "lr*": float(np.exp(logs.mean())),
                     "log std": float(logs.std(ddof=1)) if logs.size > 1 else float("nan"),
                     "at grid edge": int(sum(e for _, e in best)), "diverged runs": int(np.isinf(L).sum())})
    return pd.DataFrame(rows).set_index("batch size")


def plot_loss_curves(lrs, losses: dict, title: str, floor: float, ceiling: float | None = None):
    """Mean test loss over seeds against lr, one curve per batch size; diverged lrs marked x at the top."""
    from .plotting import new_axes

    lrs = positive_array("lrs", lrs)
    ceiling = 3 * floor if ceiling is None else ceiling
    fig, ax = new_axes("learning rate (log scale)", "test MSE after training", title, logx=True)
    for i, (B, L) in enumerate(losses.items()):
        L = np.atleast_2d(L)
        mean = np.where(np.isinf(L).any(0), np.inf, L.mean(0))
        ok = np.isfinite(mean)
        ax.plot(lrs[ok], np.minimum(mean[ok], ceiling), color=f"C{i % 8}", label=f"B = {B}")
        ax.plot(lrs[~ok], np.full((~ok).sum(), ceiling), "x", color=f"C{i % 8}")
    ax.set_ylim(0.95 * floor, 1.02 * ceiling)
    ax.axhline(floor, color="grey", ls=":", lw=1)
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_optimum(tables: dict, title: str):
    """lr* against batch size on log-log axes, one series per :func:`optimum_table`, with error
    bars of one standard deviation of log(lr*) over seeds. Returns ``(fig, ax)`` for overlays."""
    from .plotting import new_axes

    fig, ax = new_axes("batch size B", "optimal learning rate lr*", title, logx=True, logy=True)
    for i, (name, t) in enumerate(tables.items()):
        err = t["log std"].fillna(0)
        ax.errorbar(t.index, t["lr*"], yerr=[t["lr*"] * (1 - np.exp(-err)), t["lr*"] * (np.exp(err) - 1)],
                    fmt="o-" if len(tables) > 1 else "o", color=f"C{i}", capsize=3, label=name)
    ax.legend(fontsize=8)
    return fig, ax
