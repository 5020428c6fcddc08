"""Learning rates that transfer across width: the maximal-update
parameterisation (muP) against the standard one, on a three-layer MLP swept
over widths and learning rates at once, with a cross-check against
Microsoft's ``mup`` package.

The lecture walkthrough "What training costs", section scale-small-proxies.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from llmbook.core.validate import positive, positive_array, positive_int


def mup_lr_scales(
    width: int, base_width: int, parameterisation: str = "mup"
) -> dict[str, tuple[float, float]]:
    """Initial standard deviation and Adam learning-rate multiplier of the
    input, hidden and output weights of an MLP of hidden ``width``.

    "sp" (standard): std 1/sqrt(fan-in) everywhere, one learning rate. "mup"
    (Yang et al. 2022, for Adam): hidden and output learning rates times
    base_width/width, output std proportional to 1/width and equal to "sp"
    at ``base_width``. Returns ``{layer: (std, lr multiplier)}``; the input
    layer's std is per unit fan-in (the caller divides it by sqrt(d_in)).
    Section scale-small-proxies.
    """
    w = positive_int("width", width)
    w0 = positive_int("base_width", base_width)
    if parameterisation == "sp":
        return {
            "input": (1.0, 1.0),
            "hidden": (w**-0.5, 1.0),
            "output": (w**-0.5, 1.0),
        }
    if parameterisation == "mup":
        return {
            "input": (1.0, 1.0),
            "hidden": (w**-0.5, w0 / w),
            "output": (w0**0.5 / w, w0 / w),
        }
    raise ValueError(
        f"parameterisation must be 'sp' or 'mup', got {parameterisation!r}"
    )


def mlp3_forward(params, X: torch.Tensor) -> torch.Tensor:
    """relu(relu(X W_in) W_hid) W_out for stacked weights (runs, ., .) and X
    (B, d_in): outputs (runs, B, d_out). Section scale-small-proxies."""
    w_in, w_hid, w_out = params
    return torch.relu(torch.relu(X @ w_in) @ w_hid) @ w_out


def mlp3_init(
    d_in: int,
    d_out: int,
    width: int,
    parameterisation: str = "mup",
    base_width: int = 32,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Initial weights ``[W_in (d_in, width), W_hid (width, width), W_out
    (width, d_out)]`` of the three-layer MLP of :func:`mlp3_forward`, Gaussian
    with the standard deviations of :func:`mup_lr_scales` (the input layer's
    divided by sqrt(d_in)), drawn from a generator seeded with ``seed``.
    Section scale-small-proxies.
    """
    d_in, d_out = positive_int("d_in", d_in), positive_int("d_out", d_out)
    scales = mup_lr_scales(width, base_width, parameterisation)
    g = torch.Generator().manual_seed(int(seed))
    shapes = {
        "input": (d_in, width),
        "hidden": (width, width),
        "output": (width, d_out),
    }
    weights = []
    for layer, shape in shapes.items():
        std = scales[layer][0]
        std = std / math.sqrt(d_in) if layer == "input" else std
        weights.append(torch.randn(*shape, generator=g) * std)
    return weights


def _batches(problem, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """Row indices (steps, batch_size) of the minibatches, from their own
    generator so that every run and every implementation sees the same."""
    g = torch.Generator().manual_seed(int(seed) + 1)
    return torch.randint(problem.X.shape[0], (steps, batch_size), generator=g)


def width_lr_sweep(
    problem,
    width: int,
    lrs,
    parameterisation: str = "mup",
    base_width: int = 32,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
) -> np.ndarray:
    """Train a three-layer ReLU MLP of ``width`` on ``problem`` (a
    :class:`llmbook.topics.batchsize.Problem`) with Adam at every learning
    rate of ``lrs`` at once, under :func:`mup_lr_scales`; return the final training
    MSE of each run, ``inf`` where a run diverged.

    The runs share the initial weights (:func:`mlp3_init`) and the batches;
    each run has its own leaf weights and its own ``torch.optim.Adam``
    parameter groups (one fused optimiser for all), so each group carries its
    own learning rate times the layer's multiplier. The losses of all runs
    are summed into one backward pass. Section scale-small-proxies.
    """
    lrs = positive_array("lrs", lrs)
    if lrs.ndim != 1:
        raise ValueError("lrs must be a one-dimensional grid")
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    scales = mup_lr_scales(width, base_width, parameterisation)
    init = mlp3_init(
        problem.X.shape[1],
        problem.Y.shape[1],
        width,
        parameterisation,
        base_width,
        seed,
    )
    # One set of leaf weights per run, trained by one matrix product per
    # run: the weight gradient of a batched product with a short batch axis
    # (h^T g, inner dimension batch_size) takes a slow path on the CPU,
    # about 3x the time of the same products one run at a time at width 2048.
    mults = [scales[layer][1] for layer in ("input", "hidden", "output")]
    params = [[w.clone().requires_grad_(True) for w in init] for _ in lrs]
    groups = [
        {"params": [p], "lr": float(lr) * m}
        for lr, ws in zip(lrs, params)
        for p, m in zip(ws, mults)
    ]
    opt = torch.optim.Adam(groups, fused=True)
    for idx in _batches(problem, steps, batch_size, seed):
        x, y = problem.X[idx], problem.Y[idx]
        opt.zero_grad(set_to_none=True)
        loss = torch.stack(
            [((mlp3_forward(ws, x) - y) ** 2).mean() for ws in params]
        )
        torch.where(torch.isfinite(loss), loss, 0.0).sum().backward()
        opt.step()
    with torch.no_grad():
        mse = torch.stack(
            [
                ((mlp3_forward(ws, problem.X) - problem.Y) ** 2).mean()
                for ws in params
            ]
        )
    return torch.where(torch.isfinite(mse), mse, math.inf).numpy()


def width_sweep(
    problem,
    widths,
    lrs,
    parameterisation: str = "mup",
    base_width: int = 32,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
    full_grid_max_width: int = 512,
    window: int = 1,
) -> np.ndarray:
    """:func:`width_lr_sweep` at every width of ``widths`` (ascending):
    final losses ``(widths, lrs)``, ``nan`` where a learning rate was not
    run.

    Widths up to ``full_grid_max_width`` run every learning rate. A wider
    model runs only the ``window`` grid points either side of the previous
    width's best one (under both parameterisations the optimum moves by at
    most a grid step or two from one width to the next), and the window
    grows one point at a time while its best point is on its own edge but
    not the grid's. So every best point has both grid neighbours run, which
    is all :func:`llmbook.topics.batchsize.optimal_lr` uses, and the result
    equals the full grid's wherever the loss is unimodal in the learning
    rate (a test checks it). The wide models dominate the cost: this saves
    most of the sweep's time where the curves are flat or diverge.
    """
    lrs = positive_array("lrs", lrs)
    widths = [positive_int("width", w) for w in widths]
    if widths != sorted(widths):
        raise ValueError(f"widths must be ascending, got {widths}")
    window = positive_int("window", window)
    n = lrs.size
    out = np.full((len(widths), n), np.nan)

    def run(i, idx):
        idx = [j for j in idx if np.isnan(out[i, j])]
        if idx:
            out[i, idx] = width_lr_sweep(
                problem,
                widths[i],
                lrs[idx],
                parameterisation,
                base_width,
                steps,
                batch_size,
                seed,
            )

    for i, w in enumerate(widths):
        if i == 0 or w <= full_grid_max_width:
            run(i, range(n))
            continue
        prev = np.where(np.isfinite(out[i - 1]), out[i - 1], np.inf)
        c = int(np.argmin(prev))
        lo, hi = max(c - window, 0), min(c + window, n - 1)
        run(i, range(lo, hi + 1))
        while True:
            y = np.where(np.isfinite(out[i]), out[i], np.inf)
            k = int(np.argmin(y))
            if k == lo and lo > 0:
                lo -= 1
                run(i, [lo])
            elif k == hi and hi < n - 1:
                hi += 1
                run(i, [hi])
            else:
                break
    return out


def mup_package_run(
    problem,
    width: int,
    lr: float,
    base_width: int = 32,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """The μP run of :func:`width_lr_sweep` at one learning rate, written
    with Microsoft's ``mup`` package instead: ``nn.Linear`` layers and a
    ``MuReadout`` output, base shapes from models of ``base_width`` and twice
    it, ``MuAdam``. The weights start equal to :func:`mlp3_init`'s in
    function (the readout's stored weight is times width/base_width, which
    its forward pass divides back out) and the batches are the same, so the
    two compute the same run in a different order of rounding: equal at
    first, they can drift apart where training is barely stable (see
    :func:`mup_package_check`). Returns the final training MSE. Needs
    ``mup`` (an optional extra). Section scale-small-proxies.
    """
    import mup

    lr = positive("lr", lr)
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    d_in, d_out = problem.X.shape[1], problem.Y.shape[1]

    def build(w: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(d_in, w, bias=False),
            nn.ReLU(),
            nn.Linear(w, w, bias=False),
            nn.ReLU(),
            mup.MuReadout(w, d_out, bias=False),
        )

    w0 = positive_int("base_width", base_width)
    model = build(positive_int("width", width))
    mup.set_base_shapes(
        model, build(w0), delta=build(2 * w0), rescale_params=False
    )
    w_in, w_hid, w_out = mlp3_init(d_in, d_out, width, "mup", w0, seed)
    with torch.no_grad():
        model[0].weight.copy_(w_in.T)
        model[2].weight.copy_(w_hid.T)
        model[4].weight.copy_(w_out.T * model[4].width_mult())
    opt = mup.MuAdam(model.parameters(), lr=lr)
    for idx in _batches(problem, steps, batch_size, seed):
        opt.zero_grad()
        ((model(problem.X[idx]) - problem.Y[idx]) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        return float(((model(problem.X) - problem.Y) ** 2).mean())


def plot_width_sweep(lrs, losses: dict, best, titles: dict):
    """Final loss against learning rate, one panel per parameterisation (keys
    of ``losses``: arrays (widths, lrs)) on one loss scale, one line per
    width, the refined optima of ``best`` (a table with columns
    "parameterisation", "width", "best lr", "loss") starred in the width's
    colour. Returns the figure. Section scale-small-proxies.
    """
    from matplotlib import pyplot as plt

    from llmbook.book.plotting import use_style

    use_style()
    lrs = positive_array("lrs", lrs)
    # one panel under the other at the book's 6.4 in: readable on a phone
    # (issue 20)
    fig, axes = plt.subplots(
        len(losses), 1, figsize=(6.4, 3.6 * len(losses)), sharey=True
    )
    axes = np.atleast_1d(axes)
    finite = np.concatenate([c[np.isfinite(c)] for c in losses.values()])
    for ax, (p, curves) in zip(axes, losses.items()):
        part = best[best["parameterisation"] == p]
        for w, c, b, l in zip(
            part["width"], curves, part["best lr"], part["loss"]
        ):
            (line,) = ax.plot(lrs, c, marker=".", label=f"width {w}")
            ax.plot(b, l, "*", ms=11, color=line.get_color(), mec="k", mew=0.5)
        ax.set(xscale="log", yscale="log", title=titles[p])
        # diverging runs leave the frame rather than squash the optima
        ax.set_ylim(
            0.8 * finite.min(), 1.2 * min(finite.max(), 100 * finite.min())
        )
        ax.set_xlabel("Adam learning rate")
        ax.set_ylabel("final training MSE")
    axes[-1].legend(fontsize=9)
    fig.tight_layout()
    return fig


def mup_package_check(
    problem,
    widths,
    lrs,
    ours,
    base_width: int = 32,
    steps: int = 200,
    batch_size: int = 32,
    seed: int = 0,
    n_nudges: int = 3,
) -> dict[str, np.ndarray]:
    """Rerun the μP sweep at ``widths`` with the ``mup`` package
    (:func:`mup_package_run`, one learning rate at a time) and compare with
    our final losses ``ours`` (widths, lrs). The yardstick for rounding: our
    own sweep on data nudged by one part in 10^7 (``n_nudges`` random draws).

    Returns "package" losses, "rel" (package vs ours, relative), "floor"
    (largest relative move of ours under the nudges, per width and lr) and
    "best_shift" (relative difference of the refined optima). Section
    scale-small-proxies.
    """
    from llmbook.topics.batchsize import Problem, optimal_lr

    lrs = positive_array("lrs", lrs)
    ours = np.asarray(ours, dtype=float)
    if ours.shape != (len(widths), lrs.size):
        raise ValueError(
            f"ours must have shape (widths, lrs) = {(len(widths), lrs.size)},"
            f" got {ours.shape}"
        )
    pkg = np.array(
        [
            [
                mup_package_run(
                    problem, w, lr, base_width, steps, batch_size, seed
                )
                for lr in lrs
            ]
            for w in widths
        ]
    )
    floor = np.zeros_like(ours)
    for k in range(positive_int("n_nudges", n_nudges)):
        g = torch.Generator().manual_seed(int(seed) + k)
        nudge = 1 + 1e-7 * torch.randn(problem.X.shape, generator=g)
        nudged = Problem(**{**vars(problem), "X": problem.X * nudge})
        moved = np.stack(
            [
                width_lr_sweep(
                    nudged, w, lrs, "mup", base_width, steps, batch_size, seed
                )
                for w in widths
            ]
        )
        floor = np.maximum(floor, np.abs(moved - ours) / ours)
    pkg_best, _ = optimal_lr(lrs, pkg)
    our_best, _ = optimal_lr(lrs, ours)
    return {
        "package": pkg,
        "rel": np.abs(pkg - ours) / ours,
        "floor": floor,
        "best_shift": np.abs(pkg_best / our_best - 1),
    }


# --- The sweep of one seed, its summary, and the stored five-seed run
# (tools/mup_seeds.py writes lib/llmbook/data/mup_seeds.json)

PARAMETERISATIONS = {"sp": "standard parameterisation", "mup": "μP"}
SEED_SETTINGS = (
    "widths",
    "base_width",
    "lr_min",
    "lr_factor",
    "n_lrs",
    "steps",
    "batch_size",
    "n_train",
    "dim",
    "noise",
    "full_grid_max_width",
    "lr_window",
)
SEEDS_TOOL = "python tools/mup_seeds.py"


def sweep_settings(settings: dict) -> dict:
    """The entries of ``settings`` that fix a seed's sweep (the keys of
    :data:`SEED_SETTINGS`, the notebook's parameters of those names), in
    the form JSON stores them (lists, plain numbers). Section
    scale-small-proxies."""
    missing = [k for k in SEED_SETTINGS if k not in settings]
    if missing:
        raise ValueError(f"settings lacks {missing}")
    out = {}
    for k in SEED_SETTINGS:
        v = settings[k]
        out[k] = [int(w) for w in v] if k == "widths" else v
        if k != "widths":
            out[k] = int(v) if isinstance(v, (int, np.integer)) else float(v)
    return out


def seed_sweep(settings: dict, seed: int):
    """One seed's sweep of the μP notebook: the teacher task drawn with
    ``seed`` (``batchsize.mlp_problem``: ``n_train`` examples of dimension
    ``dim``, label noise ``noise``), the geometric learning-rate grid
    (``n_lrs`` points from ``lr_min``, ratio ``lr_factor``), and
    :func:`width_sweep` under both parameterisations with initial weights
    and batches from the same ``seed``.

    Returns ``(problem, lrs, losses)``: losses ``{"sp" | "mup": array
    (widths, lrs)}`` of final training MSE (``nan`` where not run). Section
    scale-small-proxies.
    """
    from llmbook.topics.batchsize import lr_grid, mlp_problem

    s = sweep_settings(settings)
    problem = mlp_problem(
        n_train=s["n_train"],
        n_test=16,
        d=s["dim"],
        sigma=s["noise"],
        seed=seed,
    )
    lrs = lr_grid(s["lr_min"], n=s["n_lrs"], factor=s["lr_factor"])
    args = (s["base_width"], s["steps"], s["batch_size"], int(seed))
    rest = (s["full_grid_max_width"], s["lr_window"])
    losses = {
        p: width_sweep(problem, s["widths"], lrs, p, *args, *rest)
        for p in PARAMETERISATIONS
    }
    return problem, lrs, losses


def sweep_optima(lrs, widths, losses: dict):
    """The refined best learning rate of every width
    (``batchsize.optimal_lr``) and the power law through them.

    Args:
        lrs: the grid (n_lrs,); widths: the hidden widths, ascending.
        losses: ``{parameterisation: array (widths, lrs)}``.

    Returns ``(best, fits)``: ``best``, a table with one row per
    parameterisation and width (columns "parameterisation", "width",
    "best lr", "loss", "at grid edge"); ``fits[p]``, a dict with the
    exponent of lr* ~ width**slope and its 95 % interval ("slope", "lo",
    "hi", from ``core.stats.loglog_slope``), "drift" (best lr at the
    narrowest width over best lr at the widest) and "spread" (the largest
    relative distance, over widths, of the narrowest width's best lr from
    each width's best). Section scale-small-proxies.
    """
    import pandas as pd

    from llmbook.core.stats import loglog_slope
    from llmbook.topics.batchsize import optimal_lr

    widths = [positive_int("width", w) for w in widths]
    rows, fits = [], {}
    for p, curves in losses.items():
        lr_star, edge = optimal_lr(lrs, curves)
        for w, b, e, c in zip(widths, lr_star, edge, curves):
            rows.append(
                {
                    "parameterisation": p,
                    "width": w,
                    "best lr": float(b),
                    "loss": float(np.nanmin(c)),
                    "at grid edge": bool(e),
                }
            )
        fit = loglog_slope(widths, lr_star)
        fits[p] = {
            "slope": fit["slope"],
            "lo": fit["lo"],
            "hi": fit["hi"],
            "drift": float(lr_star[0] / lr_star[-1]),
            "spread": float(np.abs(lr_star[0] / lr_star - 1).max()),
        }
    return pd.DataFrame(rows), fits


def seed_row(seed: int, best, fits: dict) -> dict:
    """One seed's summary as the stored file keeps it: ``{"seed": seed,
    p: {"best_lr": [per width], "at_edge": [per width], "slope", "lo",
    "hi", "drift", "spread"}}`` for each parameterisation ``p`` of
    ``fits`` (``best`` and ``fits`` from :func:`sweep_optima`). Section
    scale-small-proxies."""
    row = {"seed": int(seed)}
    for p, f in fits.items():
        part = best[best["parameterisation"] == p]
        row[p] = {
            "best_lr": [float(v) for v in part["best lr"]],
            "at_edge": [bool(v) for v in part["at grid edge"]],
            **{
                k: float(f[k])
                for k in ("slope", "lo", "hi", "drift", "spread")
            },
        }
    return row


def seed_check(settings: dict, seeds) -> dict:
    """Run :func:`seed_sweep` for every seed of ``seeds`` (each seed its
    own data draw, initial weights and batches) and summarise each with
    :func:`sweep_optima` and :func:`seed_row`. Returns ``{"settings":
    sweep settings plus "seeds", "rows": [seed_row, ...]}``, what
    ``tools/mup_seeds.py`` stores. Section scale-small-proxies."""
    seeds = [int(s) for s in seeds]
    rows = []
    for seed in seeds:
        _, lrs, losses = seed_sweep(settings, seed)
        best, fits = sweep_optima(lrs, settings["widths"], losses)
        rows.append(seed_row(seed, best, fits))
    return {
        "settings": {**sweep_settings(settings), "seeds": seeds},
        "rows": rows,
    }


def stored_seed_rows(settings: dict, path) -> list[dict] | None:
    """The rows of the seed check stored at ``path`` (JSON written by
    ``tools/mup_seeds.py``) when it was made with these sweep settings
    (:func:`sweep_settings`), else ``None`` (a reader changed a
    parameter, or there is no file): the stored seeds take minutes, so
    the notebook then shows its live seed alone
    (:func:`llmbook.book.stored.load_stored`). Section
    scale-small-proxies."""
    from llmbook.book.stored import load_stored

    stored = load_stored(path, sweep_settings(settings))
    return None if stored is None else stored["rows"]


def seed_rows(
    live: dict, settings: dict, path
) -> tuple[list[dict], bool, list[str]]:
    """The seeds the page summarises: the stored rows at ``path`` with
    the live seed's row as computed here, when the file was made with these
    sweep settings and holds that seed; otherwise the live row alone.
    Returns ``(rows, from_file, differences)``, the last naming where the
    live row differs from its stored one (empty on the machine that wrote
    the file; :func:`llmbook.book.stored.rows_with_live`). Section
    scale-small-proxies.
    """
    from llmbook.book.stored import rows_with_live

    return rows_with_live(live, path, sweep_settings(settings))


def seed_table(rows: list[dict]):
    """One line per stored seed (index "seed") and, for each
    parameterisation p, the columns "p slope", "p lo", "p hi" (the
    exponent of lr* ~ width**slope and its 95 % interval), "p drift" and
    "p spread" of :func:`sweep_optima`. Section scale-small-proxies."""
    import pandas as pd

    keys = ("slope", "lo", "hi", "drift", "spread")
    table = pd.DataFrame(
        [
            {
                "seed": r["seed"],
                **{
                    f"{p} {k}": r[p][k]
                    for p in PARAMETERISATIONS
                    if p in r
                    for k in keys
                },
            }
            for r in rows
        ]
    )
    return table.set_index("seed")


def plot_seed_exponents(table):
    """The fitted exponent of lr* ~ width**slope of every seed with its
    95 % interval, one colour per parameterisation, against a dashed zero
    line (``table`` from :func:`seed_table`). Returns the figure. Section
    scale-small-proxies."""
    from matplotlib import pyplot as plt

    from llmbook.book.plotting import use_style

    use_style()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    seeds = np.arange(len(table))
    for k, (p, title) in enumerate(PARAMETERISATIONS.items()):
        if f"{p} slope" not in table:
            continue
        y = table[f"{p} slope"].to_numpy()
        err = [y - table[f"{p} lo"], table[f"{p} hi"] - y]
        x = seeds + (k - 0.5) * 0.2
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label=title)
    ax.axhline(0, color="0.5", ls="--", lw=1)
    ax.set_xticks(seeds, [str(s) for s in table.index])
    ax.set(xlabel="seed (data draw, initialisation, batches)")
    ax.set_ylabel("exponent of best lr vs width")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig
